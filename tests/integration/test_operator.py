"""The operator end to end: real host and member kube-apiservers, kubectl, PostgreSQL."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from clusterpedia.operator.runner import OperatorThread
from clusterpedia.operator.runtime import OperatorConfig
from clusterpedia.storage.catalog import TypeCatalog
from clusterpedia.storage.query import Query, TypeFilter
from clusterpedia.storage.reader import ResourceReader
from clusterpedia.sync.cluster_synchro import ClusterSettings
from clusterpedia.sync.worker import SyncSettings
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.objects import storage
from clusterpedia.testing.waiting import eventually_async as eventually

# The operator is the subject, not the storage (whose contract every database runs elsewhere).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.one_database("postgresql")]
CRDS = Path(__file__).resolve().parents[2] / "manifests" / "crds"
CONFIGMAPS = (TypeFilter("", "v1", "configmaps"),)


@pytest.fixture(scope="module")
def host(control_plane: ControlPlane) -> APIServer:
    server = control_plane.apiservers.get("host") or control_plane.add_apiserver("host")
    server.kubectl("apply", "-k", str(CRDS))
    server.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd", "--all")
    return server


@pytest.fixture(scope="module")
def operators(host: APIServer, database_url: str) -> Iterator[list[OperatorThread]]:
    """The module's operators, the running one last: tests share it (starting one takes a few
    seconds); one that a test stopped is replaced for the next."""
    started: list[OperatorThread] = []
    yield started
    if started:
        assert not started[-1].failed, started[-1].error
        started[-1].stop()


@pytest.fixture
def operator(host: APIServer, database_url: str, operators: list[OperatorThread]) -> OperatorThread:
    """The shared running operator; a test may stop it (the next test gets a new one)."""
    if not operators or operators[-1].stop_flag.is_set():
        config = OperatorConfig(
            storage_url=database_url,
            kubeconfig=str(host.kubeconfig),
            sync=SyncSettings(batch_interval=0.05, backoff_initial=0.2),
            cluster=ClusterSettings(
                probe_interval=1.0, discovery_interval=3.0, status_interval=0.5
            ),
            import_interval=1.0,
        )
        thread = OperatorThread(config)
        thread.start()
        operators.append(thread)
    current = operators[-1]
    assert not current.failed, current.error
    return current


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reader(database_url: str) -> AsyncIterator[ResourceReader]:
    async with storage(database_url) as (_, reader):
        yield reader


def pediacluster(name: str, member: APIServer, **spec: Any) -> str:
    body = {
        "apiVersion": "cluster.clusterpedia.io/v1alpha2",
        "kind": "PediaCluster",
        "metadata": {"name": name},
        "spec": {
            "kubeconfig": base64.b64encode(member.kubeconfig.read_bytes()).decode(),
            "syncResources": [{"group": "", "resources": ["configmaps"]}],
            **spec,
        },
    }
    return json.dumps(body)


def conditions(host: APIServer, name: str) -> dict[str, tuple[str, str, str]]:
    found = host.kubectl("get", "pediacluster", name, "-o", "json", check=False)
    if found.returncode != 0:
        return {}
    status = json.loads(found.stdout).get("status") or {}
    return {
        c["type"]: (c["status"], c["reason"], c.get("message", ""))
        for c in status.get("conditions") or []
    }


async def stored(reader: ResourceReader, cluster: str, namespace: str) -> dict[str, str]:
    page = await reader.list(Query(types=CONFIGMAPS, clusters=(cluster,), namespaces=(namespace,)))
    return {
        (obj := orjson.loads(item.data))["metadata"]["name"]: (obj.get("data") or {}).get("v", "")
        for item in page.items
    }


async def test_apply_sync_follow_and_delete(
    operator, host, member_clusters, reader, database_url
) -> None:  # type: ignore[no-untyped-def]
    member = member_clusters[0]
    name = f"op-{database_url.split(':')[0].split('+')[0]}"
    namespace = f"{name}-ns"
    member.kubectl("create", "namespace", namespace)
    member.kubectl("create", "configmap", "first", "-n", namespace, "--from-literal=v=1")
    host.kubectl("apply", "-f", "-", input=pediacluster(name, member))

    await eventually(lambda: stored(reader, name, namespace), what="initial sync")
    assert (await stored(reader, name, namespace)) == {"first": "1"}
    ready = await eventually(
        lambda: conditions(host, name).get("Ready", ("",))[0] == "True", what="Ready"
    )
    assert ready

    def synced_configmaps() -> dict[str, Any] | None:
        status = json.loads(host.kubectl("get", "pediacluster", name, "-o", "json").stdout)[
            "status"
        ]
        for group in status.get("syncResources") or []:
            for resource in group["resources"]:
                conditions = resource["syncConditions"]
                if resource["name"] == "configmaps" and not conditions[0]["initialListPhase"]:
                    return status
        return None

    status = await eventually(synced_configmaps, what="per-resource progress in status")
    assert status["version"].startswith("v1.") and status["apiserver"].startswith("127.0.0.1:")
    progress = status["syncResources"][0]["resources"][0]["syncConditions"][0]
    assert (
        progress["status"] == "Syncing" and progress["objects"] >= 1 and progress["lastEventTime"]
    )
    assert "kubeconfig" not in json.dumps(status)

    member.kubectl("create", "configmap", "second", "-n", namespace, "--from-literal=v=2")
    member.kubectl("patch", "configmap", "first", "-n", namespace, "-p", '{"data":{"v":"9"}}')
    await eventually(
        lambda: _equals(stored(reader, name, namespace), {"first": "9", "second": "2"}),
        what="watch",
    )

    host.kubectl("delete", "pediacluster", name, "--timeout=60s")
    assert await stored(reader, name, namespace) == {}


async def test_invalid_specs_become_conditions(
    operator, host, member_clusters, database_url
) -> None:  # type: ignore[no-untyped-def]
    suffix = database_url.split(":")[0].split("+")[0]
    member = member_clusters[0]
    bad_token = json.dumps(
        {
            "apiVersion": "cluster.clusterpedia.io/v1alpha2",
            "kind": "PediaCluster",
            "metadata": {"name": f"badtoken-{suffix}"},
            "spec": {
                "apiserver": member.url,
                "tokenData": base64.b64encode(b"wrong").decode(),
                "syncResources": [{"group": "", "resources": ["configmaps"]}],
            },
        }
    )
    host.kubectl("apply", "-f", "-", input=bad_token)
    no_server = json.dumps(
        {
            "apiVersion": "cluster.clusterpedia.io/v1alpha2",
            "kind": "PediaCluster",
            "metadata": {"name": f"noserver-{suffix}"},
            "spec": {"syncResources": [{"group": "", "resources": ["configmaps"]}]},
        }
    )
    host.kubectl("apply", "-f", "-", input=no_server)
    try:
        unhealthy = await eventually(
            lambda: (
                conditions(host, f"badtoken-{suffix}").get("ClusterHealthy", ("",))[0] == "False"
            ),
            what="bad token -> ClusterHealthy False",
        )
        assert unhealthy
        assert "401" in conditions(host, f"badtoken-{suffix}")["ClusterHealthy"][2]
        await eventually(
            lambda: (
                conditions(host, f"noserver-{suffix}").get("Validated", ("",))[1] == "InvalidConfig"
            ),
            what="missing apiserver -> Validated False",
        )
        assert (
            "APIServer Endpoint is required"
            in conditions(host, f"noserver-{suffix}")["Validated"][2]
        )
        assert not operator.failed
    finally:
        host.kubectl(
            "delete", "pediacluster", f"badtoken-{suffix}", f"noserver-{suffix}", "--timeout=60s"
        )


async def _equals(value: Any, expected: Any) -> bool:
    return (await value) == expected


WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"""


@pytest.fixture(scope="module")
def flaky_member(control_plane: ControlPlane, database_url: str) -> Iterator[APIServer]:
    """A member of this module's own that the tests stop and restart."""
    name = "flaky-" + database_url.split(":")[0].split("+")[0]
    server = control_plane.add_apiserver(name)
    yield server
    server.stop()


async def test_health_restart_and_crds_appearing_under_a_wildcard(  # type: ignore[no-untyped-def]
    operator, host, flaky_member, reader, database_url
) -> None:
    member = flaky_member
    name = member.name
    member.kubectl("create", "namespace", "apps")
    member.kubectl("create", "configmap", "kept", "-n", "apps", "--from-literal=v=1")
    spec = {
        "syncResources": [
            {"group": "", "resources": ["configmaps"]},
            {"group": "example.com", "resources": ["*"]},
        ]
    }
    host.kubectl("apply", "-f", "-", input=pediacluster(name, member, **spec))
    try:
        # The group does not exist yet: a clear condition, and nothing syncs.
        await eventually(
            lambda: conditions(host, name).get("Validated", ("", ""))[1] == "InvalidSyncResources",
            what="unknown group reported",
        )
        # The CRD appears: the next discovery starts syncing it (and the configmaps).
        member.kubectl("apply", "-f", "-", input=WIDGET_CRD)
        member.kubectl(
            "wait", "--for=condition=established", "--timeout=30s", "crd/widgets.example.com"
        )
        widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}}
        member.kubectl("apply", "-n", "apps", "-f", "-", input=json.dumps(widget))
        widgets = (TypeFilter("example.com", "v1", "widgets"),)

        async def widget_names() -> list[str]:
            page = await reader.list(Query(types=widgets, clusters=(name,)))
            return [orjson.loads(item.data)["metadata"]["name"] for item in page.items]

        await eventually(lambda: _equals(widget_names(), ["w1"]), what="CRD objects synced")
        await eventually(
            lambda: _equals(stored(reader, name, "apps"), {"kept": "1"}), what="configmaps"
        )

        # The member goes away: unhealthy soon, rows kept.
        member.stop()
        await eventually(
            lambda: conditions(host, name).get("ClusterHealthy", ("",))[0] == "False",
            timeout=20,
            what="unhealthy after the member stopped",
        )
        assert await stored(reader, name, "apps") == {"kept": "1"}
        # ... and recorded for every API replica (their Warning header on this cluster).
        health = await TypeCatalog(reader.engine, cache_seconds=0).health()
        assert health[name][0] is False and health[name][1]

        # It comes back (same URL, same data): healthy again, changes made meanwhile arrive.
        member.start()
        member.kubectl("create", "configmap", "while-away", "-n", "apps", "--from-literal=v=2")
        await eventually(
            lambda: conditions(host, name).get("ClusterHealthy", ("",))[0] == "True",
            what="healthy again",
        )
        await eventually(
            lambda: _equals(stored(reader, name, "apps"), {"kept": "1", "while-away": "2"}),
            what="changes made while unhealthy",
        )

        # The CRD goes away: its rows go too, though the spec now names a group the member
        # does not serve (reported), and the configmaps keep syncing.
        member.kubectl("delete", "crd", "widgets.example.com", "--timeout=60s")
        await eventually(lambda: _equals(widget_names(), []), what="rows of a removed CRD deleted")
        await eventually(
            lambda: conditions(host, name).get("Validated", ("", ""))[1] == "InvalidSyncResources",
            what="the vanished group reported",
        )
        member.kubectl("create", "configmap", "after", "-n", "apps", "--from-literal=v=3")
        await eventually(
            lambda: _equals(
                stored(reader, name, "apps"), {"kept": "1", "while-away": "2", "after": "3"}
            ),
            what="configmaps still synced",
        )
    finally:
        if not member.running():
            member.start()
        host.kubectl("delete", "pediacluster", name, "--timeout=60s")


async def test_restarting_the_operator_converges(  # type: ignore[no-untyped-def]
    operator, host, member_clusters, reader, database_url
) -> None:
    member = member_clusters[0]
    name = "restart-" + database_url.split(":")[0].split("+")[0]
    namespace = f"{name}-ns"
    member.kubectl("create", "namespace", namespace)
    for item in ("one", "two"):
        member.kubectl("create", "configmap", item, "-n", namespace, "--from-literal=v=1")
    host.kubectl("apply", "-f", "-", input=pediacluster(name, member))
    await eventually(
        lambda: _equals(stored(reader, name, namespace), {"one": "1", "two": "1"}), what="sync"
    )
    operator.stop()
    member.kubectl("delete", "configmap", "one", "-n", namespace)
    member.kubectl("patch", "configmap", "two", "-n", namespace, "-p", '{"data":{"v":"2"}}')
    member.kubectl("create", "configmap", "three", "-n", namespace, "--from-literal=v=3")
    restarted = OperatorThread(operator.config)
    restarted.start()
    try:
        await eventually(
            lambda: _equals(stored(reader, name, namespace), {"two": "2", "three": "3"}),
            what="convergence after restart",
        )
    finally:
        host.kubectl("delete", "pediacluster", name, "--timeout=60s")
        restarted.stop()


async def test_a_shared_sync_resources_change_reconfigures_its_clusters(  # type: ignore[no-untyped-def]
    operator, host, member_clusters, reader, database_url
) -> None:
    member = member_clusters[0]
    suffix = database_url.split(":")[0].split("+")[0]
    name, shared, namespace = f"shared-{suffix}", f"base-{suffix}", f"shared-{suffix}-ns"
    member.kubectl("create", "namespace", namespace)
    member.kubectl("create", "configmap", "cm", "-n", namespace, "--from-literal=v=1")
    member.kubectl("create", "secret", "generic", "s", "-n", namespace, "--from-literal=k=v")

    def shared_resources(*resources: str) -> str:
        return json.dumps(
            {
                "apiVersion": "cluster.clusterpedia.io/v1alpha2",
                "kind": "ClusterSyncResources",
                "metadata": {"name": shared},
                "spec": {"syncResources": [{"group": "", "resources": list(resources)}]},
            }
        )

    secrets = (TypeFilter("", "v1", "secrets"),)

    async def secret_names() -> list[str]:
        page = await reader.list(Query(types=secrets, clusters=(name,), namespaces=(namespace,)))
        return [orjson.loads(item.data)["metadata"]["name"] for item in page.items]

    host.kubectl("apply", "-f", "-", input=shared_resources("configmaps"))
    host.kubectl(
        "apply",
        "-f",
        "-",
        input=pediacluster(name, member, syncResources=[], syncResourcesRefName=shared),
    )
    try:
        await eventually(lambda: _equals(stored(reader, name, namespace), {"cm": "1"}), what="ref")
        assert await secret_names() == []
        host.kubectl("apply", "-f", "-", input=shared_resources("configmaps", "secrets"))
        await eventually(lambda: _equals(secret_names(), ["s"]), what="reconfigured by the change")
    finally:
        host.kubectl("delete", "pediacluster", name, "--timeout=60s")
        host.kubectl("delete", "clustersyncresources", shared)


async def test_credentials_from_secrets(  # type: ignore[no-untyped-def]
    operator, host, member_clusters, reader, database_url
) -> None:
    member = member_clusters[0]
    suffix = database_url.split(":")[0].split("+")[0]
    name, namespace = f"secret-{suffix}", f"secret-{suffix}-ns"
    member.kubectl("create", "namespace", namespace)
    member.kubectl("create", "configmap", "via-secret", "-n", namespace, "--from-literal=v=1")
    host.kubectl("create", "namespace", "clusterpedia-system", check=False)
    host.kubectl(
        "create", "secret", "generic", f"member-{suffix}", "-n", "clusterpedia-system",
        f"--from-file=kubeconfig={member.kubeconfig}",
    )  # fmt: skip
    reference = {"kubeconfig": {"name": f"member-{suffix}", "key": "kubeconfig"}}
    body = json.loads(pediacluster(name, member, authenticationFrom=reference))
    del body["spec"]["kubeconfig"]
    host.kubectl("apply", "-f", "-", input=json.dumps(body))
    try:
        await eventually(
            lambda: _equals(stored(reader, name, namespace), {"via-secret": "1"}), what="sync"
        )
    finally:
        host.kubectl("delete", "pediacluster", name, "--timeout=60s")


def _spec_cluster(name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "cluster.clusterpedia.io/v1alpha2",
            "kind": "PediaCluster",
            "metadata": {"name": name},
            "spec": {"syncResources": [{"group": "", "resources": ["configmaps"]}], **spec},
        }
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_hostile_specs_become_conditions_and_reach_no_server(  # type: ignore[no-untyped-def]
    operator, host, database_url, caplog
) -> None:
    """Each spec below once ended in a silent dead sync, a Kopf retry loop, a credential in the
    log, or a Secret of another namespace sent to the spec's server. Now each is a condition,
    and the server named in the spec (a listening socket) is never contacted."""
    suffix = database_url.split(":")[0].split("+")[0]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    trap = f"https://127.0.0.1:{port}"
    # A Secret the operator can read, outside its namespace.
    host.kubectl("create", "secret", "generic", "stolen", "-n", "default", "--from-literal=t=x",
                 check=False)  # fmt: skip
    token = {"tokenData": _b64(b"t0ken")}
    stolen = {"token": {"name": "../../default/secrets/stolen", "key": "t"}}
    with_password = f"https://admin:s3cret@127.0.0.1:{port}"
    cases = {
        "traversal": ({"apiserver": trap, "authenticationFrom": stolen}, "not a valid object name"),
        "slash": (
            {"apiserver": trap, "authenticationFrom": {"token": {"name": "a/b", "key": "t"}}},
            "not a valid object name",
        ),
        "refname": ({"apiserver": trap, **token, "syncResourcesRefName": "../x"}, "RefName"),
        "userinfo": ({"apiserver": with_password, **token}, "credentials in the URL"),
        "port": ({"apiserver": "https://127.0.0.1:99999", **token}, "not a valid URL"),
        "ipv6": ({"apiserver": "https://[::1", **token}, "not a valid URL"),
        "crlf": ({"apiserver": trap, "tokenData": _b64(b"abc\r\nX-Evil: 1")}, "control characters"),
        "utf8": ({"apiserver": trap, "tokenData": _b64(b"\xff\xfe\xfd")}, "not UTF-8"),
        "http": ({"apiserver": f"http://127.0.0.1:{port}", **token}, "plain HTTP"),
    }  # fmt: skip
    names = {case: f"hostile-{case}-{suffix}" for case in cases}
    for case, (spec, _) in cases.items():
        host.kubectl("apply", "-f", "-", input=_spec_cluster(names[case], spec))
    try:
        for case, (_, message) in cases.items():
            await eventually(
                lambda case=case: (
                    conditions(host, names[case]).get("Validated", ("",))[1] == "InvalidConfig"
                ),
                what=f"{case} -> Validated False",
            )
            validated = conditions(host, names[case])["Validated"]
            assert validated[0] == "False" and message in validated[2], (case, validated)
            assert conditions(host, names[case])["Ready"][0] == "False"
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected to the spec's server
        assert "s3cret" not in caplog.text
        assert not operator.failed
    finally:
        listener.close()
        host.kubectl("delete", "pediacluster", *names.values(), "--timeout=60s")


def _sharding_name(host: APIServer, name: str) -> str | None:
    found = json.loads(host.kubectl("get", "pediacluster", name, "-o", "json").stdout)
    return (found.get("status") or {}).get("shardingName")


async def test_explicit_sharding_moves_a_cluster_between_shards(  # type: ignore[no-untyped-def]
    operator, host, member_clusters, reader, database_url
) -> None:
    """The original's --sharding-name: a replica syncs the PediaClusters whose
    spec.shardingName is its own; a move hands over through status.shardingName (released
    by the old shard before the new one takes it); the owner removes the rows on delete."""
    member = member_clusters[0]
    suffix = database_url.split(":")[0].split("+")[0]
    name, namespace = f"sharded-{suffix}", f"sharded-{suffix}-ns"
    member.kubectl("create", "namespace", namespace)
    member.kubectl("create", "configmap", "first", "-n", namespace, "--from-literal=v=1")
    shard = OperatorThread(replace(operator.config, sharding_name="shard-a"))
    shard.start()
    try:
        host.kubectl("apply", "-f", "-", input=pediacluster(name, member, shardingName="shard-a"))
        await eventually(
            lambda: _equals(stored(reader, name, namespace), {"first": "1"}), what="shard-a syncs"
        )
        assert _sharding_name(host, name) == "shard-a"

        # To the default shard (the per-test operator): released, then taken and synced there.
        host.kubectl("patch", "pediacluster", name, "--type=merge", "-p",
                     '{"spec": {"shardingName": null}}')  # fmt: skip
        await eventually(lambda: _sharding_name(host, name) is None, what="shard-a releases it")
        member.kubectl("create", "configmap", "second", "-n", namespace, "--from-literal=v=2")
        await eventually(
            lambda: _equals(stored(reader, name, namespace), {"first": "1", "second": "2"}),
            what="the default shard syncs it",
        )
        shard.stop()  # shard-a no longer matters: what follows is the default shard's
        member.kubectl("create", "configmap", "third", "-n", namespace, "--from-literal=v=3")
        await eventually(
            lambda: _equals(
                stored(reader, name, namespace), {"first": "1", "second": "2", "third": "3"}
            ),
            what="still synced by the default shard",
        )
        host.kubectl("delete", "pediacluster", name, "--timeout=60s")
        await eventually(lambda: _equals(stored(reader, name, namespace), {}), what="rows removed")
    finally:
        shard.stop()
        host.kubectl("delete", "pediacluster", name, "--ignore-not-found", "--timeout=60s")


IMPORT_POLICIES = Path(__file__).resolve().parents[2] / "manifests" / "import-policies"


def _source_crd(group: str, kind: str, *, namespaced: bool) -> str:
    """The source kind of an import policy, as its platform defines it (shape only)."""
    plural = kind.lower() + "s"
    return json.dumps({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "scope": "Namespaced" if namespaced else "Cluster",
                 "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
                 "versions": [{"name": "v1beta1" if "x-k8s" in group else "v1alpha1",
                               "served": True, "storage": True,
                               "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {
                                   "type": "object",
                                   "x-kubernetes-preserve-unknown-fields": True}}}]},
    })  # fmt: skip


def _exists(host: APIServer, *args: str) -> bool:
    return host.kubectl("get", *args, check=False).returncode == 0


async def test_a_cluster_api_cluster_is_imported_then_removed_with_its_source(  # type: ignore[no-untyped-def]
    operator, host, member_clusters, reader, database_url
) -> None:
    """The shipped cluster-api policy, against a Cluster API-shaped Cluster and the kubeconfig
    Secret Cluster API writes: a lifecycle at once, the PediaCluster once the control plane is
    initialized (and it syncs), and both gone when the Cluster goes."""
    member = member_clusters[0]
    suffix = database_url.split(":")[0].split("+")[0]
    namespace, name = f"fleet-{suffix}", "c1"
    imported = f"capi-{namespace}-{name}"
    host.kubectl(
        "apply", "-f", "-", input=_source_crd("cluster.x-k8s.io", "Cluster", namespaced=True)
    )
    host.kubectl(
        "wait", "--for=condition=established", "--timeout=60s", "crd/clusters.cluster.x-k8s.io"
    )
    host.kubectl("create", "namespace", namespace)
    kubeconfig = base64.b64encode(member.kubeconfig.read_bytes()).decode()
    host.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-kubeconfig",
                                                           "namespace": namespace},
        "data": {"value": kubeconfig},  # a Secret's data is base64: the kubeconfig once
    }))  # fmt: skip
    host.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": namespace}, "spec": {},
    }))  # fmt: skip
    host.kubectl("apply", "-f", str(IMPORT_POLICIES / "cluster-api.yaml"))
    try:
        await eventually(
            lambda: _exists(host, "pediaclusterlifecycle", imported), what="a lifecycle per Cluster"
        )
        assert not _exists(host, "pediacluster", imported)  # no control plane yet
        status = {"status": {"conditions": [{"type": "ControlPlaneInitialized", "status": "True"}]}}
        host.kubectl("patch", "cluster.cluster.x-k8s.io", name, "-n", namespace, "--type=merge",
                     "--subresource=status", "-p", json.dumps(status))  # fmt: skip
        await eventually(
            lambda: conditions(host, imported).get("ClusterHealthy", ("",))[0] == "True",
            what="the imported PediaCluster syncs",
        )
        found = json.loads(host.kubectl("get", "pediacluster", imported, "-o", "json").stdout)
        assert found["spec"]["kubeconfig"] == kubeconfig
        assert found["metadata"]["ownerReferences"][0]["kind"] == "PediaClusterLifecycle"
        policy = json.loads(
            host.kubectl("get", "clusterimportpolicy", "cluster-api", "-o", "json").stdout
        )
        assert {c["type"]: c["status"] for c in policy["status"]["conditions"]} == {
            "Validated": "True", "Reconciling": "True",
        }  # fmt: skip

        host.kubectl("delete", "cluster.cluster.x-k8s.io", name, "-n", namespace)
        await eventually(
            lambda: (
                not _exists(host, "pediacluster", imported)
                and not _exists(host, "pediaclusterlifecycle", imported)
            ),
            timeout=60,
            what="the PediaCluster goes with its source",
        )
        await eventually(lambda: _equals(stored(reader, imported, "default"), {}), what="rows gone")
    finally:
        host.kubectl("delete", "clusterimportpolicy", "cluster-api", "--ignore-not-found")
        host.kubectl("delete", "pediacluster", imported, "--ignore-not-found", "--timeout=60s")
        host.kubectl("delete", "namespace", namespace, "--wait=false")


async def test_a_karmada_cluster_is_imported_with_its_secrets_token(  # type: ignore[no-untyped-def]
    operator, host, member_clusters, database_url
) -> None:
    """The shipped karmada policy, against a Karmada-shaped (cluster-scoped) Cluster whose
    secretRef holds a member ServiceAccount's token and the member's CA; an invalid policy
    says why in its status."""
    member = member_clusters[1]
    suffix = database_url.split(":")[0].split("+")[0]
    name = f"member-{suffix}"
    imported = f"karmada-{name}"
    member.kubectl("create", "serviceaccount", f"karmada-{suffix}", "-n", "default", check=False)
    member.kubectl("create", "clusterrolebinding", f"karmada-{suffix}",
                   "--clusterrole=cluster-admin", f"--serviceaccount=default:karmada-{suffix}",
                   check=False)  # fmt: skip
    token = member.kubectl("create", "token", f"karmada-{suffix}", "-n", "default").stdout.strip()
    ca = member.kubeconfig_dict()["clusters"][0]["cluster"]["certificate-authority-data"]
    host.kubectl(
        "apply", "-f", "-", input=_source_crd("cluster.karmada.io", "Cluster", namespaced=False)
    )
    host.kubectl(
        "wait", "--for=condition=established", "--timeout=60s", "crd/clusters.cluster.karmada.io"
    )
    host.kubectl("create", "namespace", "karmada-cluster", check=False)
    host.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "karmada-cluster"},
        "data": {"token": base64.b64encode(token.encode()).decode(), "caBundle": ca},
    }))  # fmt: skip
    host.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster", "metadata": {"name": name},
        "spec": {"apiEndpoint": member.url,
                 "secretRef": {"namespace": "karmada-cluster", "name": name}},
    }))  # fmt: skip
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    host.kubectl("patch", "cluster.cluster.karmada.io", name, "--type=merge",
                 "--subresource=status", "-p", json.dumps(ready))  # fmt: skip
    host.kubectl("apply", "-f", str(IMPORT_POLICIES / "karmada.yaml"))
    broken = {"apiVersion": "policy.clusterpedia.io/v1alpha1", "kind": "ClusterImportPolicy",
              "metadata": {"name": f"broken-{suffix}"},
              "spec": {"source": {"group": "cluster.karmada.io", "resource": "clusters"},
                       "nameTemplate": "{{ if .source }}"}}  # fmt: skip
    host.kubectl("apply", "-f", "-", input=json.dumps(broken))
    try:
        await eventually(
            lambda: conditions(host, imported).get("ClusterHealthy", ("",))[0] == "True",
            what="the imported Karmada member syncs",
        )
        found = json.loads(host.kubectl("get", "pediacluster", imported, "-o", "json").stdout)
        assert found["spec"]["apiserver"] == member.url and found["spec"]["caData"] == ca

        def refusal() -> str:
            got = json.loads(host.kubectl("get", "clusterimportpolicy", f"broken-{suffix}",
                                          "-o", "json").stdout)  # fmt: skip
            validated = [c for c in (got.get("status") or {}).get("conditions") or ()
                         if c["type"] == "Validated"]  # fmt: skip
            return (
                validated[0]["message"] if validated and validated[0]["status"] == "False" else ""
            )

        assert "has no {{ end }}" in await eventually(refusal, what="the broken policy's reason")

        # Deleting the policy takes its lifecycles and their PediaClusters along.
        host.kubectl("delete", "clusterimportpolicy", "karmada", "--timeout=60s")
        await eventually(
            lambda: (
                not _exists(host, "pediacluster", imported)
                and not _exists(host, "pediaclusterlifecycle", imported)
            ),
            timeout=60,
            what="the policy's PediaCluster goes with it",
        )
    finally:
        host.kubectl(
            "delete", "clusterimportpolicy", "karmada", f"broken-{suffix}", "--ignore-not-found"
        )
        host.kubectl("delete", "cluster.cluster.karmada.io", name, "--ignore-not-found")
        host.kubectl(
            "delete", "pediaclusterlifecycle", imported, "--ignore-not-found", "--timeout=60s"
        )
        host.kubectl("delete", "pediacluster", imported, "--ignore-not-found", "--timeout=60s")
