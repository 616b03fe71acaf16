"""The product end to end: ``clusterpedia run`` as a child process (operator and API server in
one process), real host and member kube-apiservers, kubectl through the host's aggregation
layer, SQLite (the manifests' default)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterpedia.apiserver.testing import PREFIX, register_apiservice
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.objects import gadget_crd, pediacluster
from clusterpedia.testing.product import ProductProcess, console_script
from clusterpedia.testing.waiting import eventually

# The product's wiring is the subject (kubectl through the aggregator, both members, a CRD);
# every database runs the product end to end in test_member_oracle, test_crash, test_shutdown.
pytestmark = pytest.mark.one_database("sqlite")


@pytest.fixture(scope="module")
def dialect(database_url: str) -> str:
    return database_url.split(":")[0].split("+")[0].replace("postgresql", "pg")


@pytest.fixture(scope="module")
def members(member_clusters: list[APIServer], dialect: str) -> list[APIServer]:
    """In each member: namespace e2e-<dialect> with two Pods and a ConfigMap."""
    namespace = f"e2e-{dialect}"
    for member in member_clusters:
        objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
        objects += [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"web-{i}", "namespace": namespace, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]},
            }
            for i in range(2)
        ]
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": namespace},
                "data": {"a": "1"},
            }
        )
        member.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    member = member_clusters[1]
    member.kubectl("apply", "-f", "-", input=yaml.safe_dump(GADGET_CRD))
    member.kubectl(
        "wait", "--for=condition=established", "--timeout=60s", "crd/gadgets.e2e.example.com"
    )
    gadget = {
        "apiVersion": "e2e.example.com/v1",
        "kind": "Gadget",
        "metadata": {"name": "g1", "namespace": namespace},
        "spec": {"color": "teal", "size": 3},
    }
    member.kubectl("apply", "-f", "-", input=yaml.safe_dump(gadget))
    return member_clusters


GADGET_CRD = gadget_crd("e2e.example.com")


def member_cluster(
    name: str, member: APIServer, namespace: str, *extra: dict[str, Any]
) -> dict[str, Any]:
    """A PediaCluster syncing the pods and ConfigMaps of ``namespace``, and ``extra``."""
    pods = {
        "group": "",
        "resources": ["pods", "configmaps"],
        "fieldSelector": f"metadata.namespace={namespace}",
        "eventsInvolvedResources": ["pods"],
    }
    return pediacluster(name, member.kubeconfig.read_bytes(), pods, *extra)


@pytest.fixture(scope="module")
def product(
    host: APIServer,
    members: list[APIServer],
    database_url: str,
    dialect: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProductProcess]:
    process = ProductProcess(
        workdir=tmp_path_factory.mktemp("product"),
        kubeconfig=host.kubeconfig,
        storage_url=database_url,
    ).start()
    register_apiservice(host, port=process.port, ca_pem=process.ca_pem)
    clusters = [
        member_cluster(f"{dialect}-one", members[0], f"e2e-{dialect}"),
        # only the second member serves the Gadget CRD (an unknown group is a spec error)
        member_cluster(
            f"{dialect}-two",
            members[1],
            f"e2e-{dialect}",
            {"group": "e2e.example.com", "resources": ["*"]},
        ),
    ]
    host.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(clusters))
    yield process
    host.kubectl(
        "delete", "pediaclusters", *(c["metadata"]["name"] for c in clusters), "--timeout=60s"
    )
    code = process.stop()
    assert code == 0, process.log()[-3000:]


def kubectl(host: APIServer, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return host.kubectl(f"--server={host.url}{PREFIX}", *args, check=check)


def test_kubectl_get_pods_across_members_through_the_aggregator(
    host: APIServer, product: ProductProcess, dialect: str
) -> None:
    def listed() -> list[list[str]]:
        result = kubectl(host, "get", "pods", "-A", check=False)
        rows = [line.split() for line in result.stdout.splitlines()[1:]]
        return rows if len(rows) == 4 else []

    rows = eventually(listed, what="4 pods from two members")
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (f"e2e-{dialect}", f"{dialect}-{n}", f"web-{i}") for n in ("one", "two") for i in (0, 1)
    }
    print(kubectl(host, "get", "pods", "-A").stdout)  # shown in the closing note


def test_member_changes_follow(
    host: APIServer, product: ProductProcess, members: list[APIServer], dialect: str
) -> None:
    namespace = f"e2e-{dialect}"
    eventually(
        lambda: "settings" in kubectl(host, "get", "configmaps", "-A", check=False).stdout,
        what="the ConfigMap is synced",
    )
    members[0].kubectl("delete", "configmap", "settings", "-n", namespace)
    members[1].kubectl("label", "configmap", "settings", "-n", namespace, "changed=yes")

    def followed() -> bool:
        output = kubectl(host, "get", "configmaps", "-A", "--show-labels", check=False).stdout
        rows = [line.split() for line in output.splitlines()[1:] if line.startswith(namespace)]
        return len(rows) == 1 and rows[0][1] == f"{dialect}-two" and "changed=yes" in rows[0][-1]

    eventually(followed, what="a delete and a label change reach the API")


def test_kubectl_describe_shows_the_members_events_of_the_object(
    host: APIServer, product: ProductProcess, members: list[APIServer], dialect: str
) -> None:
    """eventsInvolvedResources syncs the member's Events of Pods, so ``kubectl describe``
    through Clusterpedia (it lists Events by involvedObject fields) shows them."""
    namespace, member = f"e2e-{dialect}", members[0]
    pod = json.loads(member.kubectl("get", "pod", "web-0", "-n", namespace, "-o", "json").stdout)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"web-0.{dialect}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": "web-0",
            "namespace": namespace,
            "uid": pod["metadata"]["uid"],
        },
        "reason": "Pulled",
        "message": f"image pulled on the {dialect} member",
        "type": "Normal",
        "source": {"component": "kubelet"},
        "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z",
        "lastTimestamp": "2026-01-01T00:00:00Z",
    }
    member.kubectl("apply", "-f", "-", input=json.dumps(event))
    one = f"--server={host.url}{PREFIX}/clusters/{dialect}-one"

    def described() -> str:
        result = host.kubectl(one, "describe", "pod", "web-0", "-n", namespace, check=False)
        return result.stdout if f"image pulled on the {dialect} member" in result.stdout else ""

    output = eventually(described, what="the member's event in kubectl describe")
    assert re.search(r"Events:\s*\n\s*Type\s+Reason", output), output

    # injectEvents (parameter, or the search label through kubectl) embeds them in the object
    raw = host.kubectl(
        "get", "--raw", f"{PREFIX}/clusters/{dialect}-one/api/v1/namespaces/{namespace}/pods"
        "?injectEvents=true&limit=10",
    )  # fmt: skip
    labelled = kubectl(
        host, "get", "pods", "-n", namespace, "-o", "json",
        "-l", "search.clusterpedia.io/inject-events=true,search.clusterpedia.io/clusters="
        f"{dialect}-one",
    )  # fmt: skip
    for listed in (json.loads(raw.stdout), json.loads(labelled.stdout)):
        pods = {p["metadata"]["name"]: p["metadata"]["annotations"] for p in listed["items"]}
        embedded = json.loads(pods["web-0"]["shadow.clusterpedia.io/events"])
        assert [e["message"] for e in embedded] == [f"image pulled on the {dialect} member"]
        assert json.loads(pods["web-1"]["shadow.clusterpedia.io/events"]) == []


def test_pediacluster_status_is_ready(
    host: APIServer, product: ProductProcess, dialect: str
) -> None:
    def ready() -> bool:
        found = json.loads(
            host.kubectl("get", "pediacluster", f"{dialect}-one", "-o", "json").stdout
        )
        conditions = {
            c["type"]: c["status"] for c in (found.get("status") or {}).get("conditions") or []
        }
        return conditions.get("Ready") == "True"

    eventually(ready, what="PediaCluster Ready")
    printed = host.kubectl("get", "pediacluster", f"{dialect}-one").stdout
    assert printed.split()[:3] == ["NAME", "READY", "VERSION"] and "True" in printed


def test_kubeconfig_helper_points_kubectl_at_clusterpedia(
    host: APIServer, product: ProductProcess, dialect: str, tmp_path: Path
) -> None:
    output = tmp_path / "kubeconfig"
    result = subprocess.run(
        [console_script(), "kubeconfig", f"--kubeconfig={host.kubeconfig}", f"--output={output}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"cluster {dialect}-one: written" in result.stdout

    def everywhere() -> bool:
        result = host.kubectl(
            f"--kubeconfig={output}", "--cluster=clusterpedia", "get", "pods", "-A", check=False
        )
        return len(result.stdout.splitlines()) == 5  # the header and 4 pods

    eventually(everywhere, what="4 pods through the clusterpedia context")

    def one() -> str:
        # retried: a busy host may briefly mark the APIService unavailable (kubectl then says
        # so; a lasting failure still fails here, with kubectl's words)
        result = host.kubectl(
            f"--kubeconfig={output}", f"--cluster={dialect}-two",
            "get", "pod", "web-1", "-n", f"e2e-{dialect}", "-o", "json", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            print(result.stderr)
        return result.stdout if result.returncode == 0 else ""

    found = eventually(one, timeout=30, what=f"web-1 through the {dialect}-two context")
    assert json.loads(found)["metadata"]["name"] == "web-1"


def test_sync_metrics_are_served_at_metrics(
    host: APIServer, product: ProductProcess, dialect: str
) -> None:
    """Through the front-proxy path: the host's proxy client certificate and X-Remote headers."""
    text = product.get_as_front_proxy(host, "/metrics", user="monitoring").decode()
    assert f'clusterpedia_sync_events_total{{cluster="{dialect}-one"' in text


def test_custom_resource_printer_columns_come_from_the_member_crd(
    host: APIServer, product: ProductProcess, dialect: str
) -> None:
    def listed() -> list[str]:
        # Every Gadget of the member (other databases' runs left theirs in their namespaces).
        lines = kubectl(host, "get", "gd", "-A", check=False).stdout.splitlines()
        ours = [line for line in lines[1:] if line.startswith(f"e2e-{dialect} ")]
        return [lines[0], *ours] if ours else []

    header, row = eventually(listed, what="the Gadget is synced and discoverable")
    assert header.split() == ["NAMESPACE", "CLUSTER", "NAME", "COLOR", "SIZE"]
    assert row.split() == [f"e2e-{dialect}", f"{dialect}-two", "g1", "teal", "3"]


def open_watches(product: ProductProcess, host: APIServer) -> float:
    """The watch streams the product serves now, from its metrics."""
    text = product.get_as_front_proxy(host, "/metrics", user="monitoring").decode()
    found = re.search(r'^clusterpedia_apiserver_in_flight\{kind="watch"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def printed(expected: set[tuple[str, ...]], lines: list[str]) -> bool:
    """Every row of ``expected`` (event, namespace, cluster, name) is among ``lines``."""
    return expected <= {tuple(line.split()[:4]) for line in lines}


def test_kubectl_watch_follows_both_members_through_the_aggregator(
    host: APIServer, product: ProductProcess, members: list[APIServer], dialect: str
) -> None:
    """``kubectl get pods -A -w`` through the host shows changes in two members as they
    happen."""
    namespace = f"e2e-{dialect}"
    eventually(
        lambda: kubectl(host, "get", "pods", "-A", check=False).returncode == 0,
        what="pods are synced",
    )
    command = [
        str(host.assets.kubectl), f"--kubeconfig={host.kubeconfig}", f"--server={host.url}{PREFIX}",
        "get", "pods", "-A", "-l", "app=watched", "-w", "--output-watch-events",
    ]  # fmt: skip
    lines: list[str] = []
    watches_before = open_watches(product, host)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as kc:
        assert kc.stdout is not None
        stdout = kc.stdout
        reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")))
        reader.start()
        try:
            # kubectl lists (nothing matches), then watches: wait for its watch to be open.
            eventually(lambda: open_watches(product, host) > watches_before, what="kubectl watches")
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "watched", "namespace": namespace,
                             "labels": {"app": "watched"}},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]},
            }  # fmt: skip
            # One step at a time: changes closer together than a sync batch (250 ms) may
            # reach the log as one event.
            steps = [
                ("ADDED", ("apply", "-f", "-")),
                ("MODIFIED", ("label", "pod", "watched", "-n", namespace, "step=two")),
                ("DELETED", ("delete", "pod", "watched", "-n", namespace, "--wait=false")),
            ]
            for event, args in steps:
                for member in members:
                    member.kubectl(*args, input=yaml.safe_dump(pod) if event == "ADDED" else None)
                expected = {(event, namespace, f"{dialect}-{n}", "watched") for n in ("one", "two")}
                eventually(partial(printed, expected, lines), what=f"{event} from both members")
        finally:
            kc.terminate()
            reader.join(10)
            errors = kc.stderr.read() if kc.stderr else ""
    assert not errors, errors
    print("".join(lines))  # shown in the closing note
