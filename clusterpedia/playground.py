"""``clusterpedia playground``: the whole product on one machine, in one command.

A host cluster (with the aggregation layer's front-proxy flags) and two member clusters run as
real kube-apiservers on one etcd (the test suite's harness, binaries provisioned the same way);
the members get realistic objects, and kwok plays each member's node so its pods are Running
and serve logs and exec (``kubectl --cluster member-1 logs``, ``exec``, through Clusterpedia);
``clusterpedia run`` (SQLite) syncs them as PediaClusters
``member-1`` and ``member-2`` and serves them through the host's aggregation layer, registered
exactly as an install registers it. A kubeconfig with every context is written, and everything
stops on SIGINT/SIGTERM, leaving no process behind.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from clusterpedia.kubeconfig import add_clusterpedia_clusters
from clusterpedia.testing.aggregation import register_apiservice
from clusterpedia.testing.assets import ensure_assets, ensure_kwok
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.kwok import KWOK_MEMBER_ARGS, KwokNodes
from clusterpedia.testing.objects import gadget_crd, pediacluster
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually

CRDS = Path(__file__).resolve().parent / "crds"  # packaged copies of manifests/crds
MEMBERS = ("member-1", "member-2")
NODE = "node-0"  # each member's one node, played by kwok
GADGET_CRD = gadget_crd("playground.clusterpedia.io")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def member_objects(member: str) -> list[dict[str, Any]]:
    """Namespaces with deployments, pods, services, configmaps, as an application team has."""
    objects: list[dict[str, Any]] = []
    for team, apps in (("shop", ("web", "cart")), ("blog", ("web",))):
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": team}})
        for app in apps:
            labels = {"app": app, "team": team}
            container = {"name": app, "image": f"registry.example/{team}/{app}:1.{len(member)}"}
            objects.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": app, "namespace": team, "labels": labels},
                    "spec": {
                        "replicas": 2,
                        "selector": {"matchLabels": labels},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {"containers": [container]},
                        },
                    },
                }
            )
            for index in range(2):
                objects.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": f"{app}-{index}", "namespace": team, "labels": labels},
                        "spec": {"nodeName": NODE, "containers": [container]},
                    }
                )
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": app, "namespace": team},
                    "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
                }
            )
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"{app}-settings", "namespace": team},
                    "data": {"cluster": member, "log-level": "info"},
                }
            )
        objects.append(
            {
                "apiVersion": "playground.clusterpedia.io/v1",
                "kind": "Gadget",
                "metadata": {"name": f"{team}-gadget", "namespace": team},
                "spec": {"color": "teal" if member == "member-1" else "amber", "size": len(team)},
            }
        )
    return objects


def member_cluster(name: str, member: APIServer) -> dict[str, Any]:
    spec = pediacluster(
        name,
        member.kubeconfig.read_bytes(),
        {"group": "", "resources": ["*"]},
        {"group": "apps", "resources": ["*"]},
    )
    spec["spec"]["syncAllCustomResources"] = True
    return spec


def write_kubeconfig(path: Path, host: APIServer, members: dict[str, APIServer]) -> None:
    """Contexts playground-host and playground-<member>; clusters clusterpedia, member-1 and
    member-2 through the host (what ``clusterpedia kubeconfig`` adds)."""
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [],
        "users": [],
        "contexts": [],
    }
    for name, server in {
        "playground-host": host,
        **{f"playground-{m}": s for m, s in members.items()},
    }.items():
        own = server.kubeconfig_dict()
        config["clusters"].append({"name": name, "cluster": own["clusters"][0]["cluster"]})
        config["users"].append({"name": f"{name}-admin", "user": own["users"][0]["user"]})
        config["contexts"].append(
            {"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}
        )
    config["current-context"] = "playground-host"
    add_clusterpedia_clusters(config, list(members))
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _ready(host: APIServer, name: str) -> bool:
    found = host.kubectl("get", "pediacluster", name, "-o", "json", check=False)
    if found.returncode != 0:
        return False
    status = json.loads(found.stdout).get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return conditions.get("Ready") == "True"


def run_playground(*, kubeconfig: Path, workdir: Path | None = None) -> int:
    """Run until SIGINT/SIGTERM; 0 after a clean stop."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    base = workdir or Path(tempfile.mkdtemp(prefix="clusterpedia-playground-"))
    say("==> test binaries (kube-apiserver, etcd, kubectl, kwok; built once with Go, then cached)")
    assets = ensure_assets(log=True)
    say(f"    {assets.directory}")
    say(f"    {ensure_kwok(log=True)}")
    with ControlPlane(assets=assets, workdir=base / "clusters") as plane, ExitStack() as kwoks:
        say("==> host cluster (with the aggregation layer's front-proxy flags)")
        host = plane.add_apiserver("host", front_proxy=True)
        members: dict[str, APIServer] = {}
        for name in MEMBERS:
            say(f"==> member cluster {name} (its node {NODE} played by kwok)")
            members[name] = plane.add_apiserver(name, extra_args=KWOK_MEMBER_ARGS)
            node = KwokNodes(members[name]).start()
            kwoks.callback(node.stop)
            node.add_node(NODE)
            node.write_log(f"hello from a pod of {name}")
            members[name].kubectl("apply", "-f", "-", input=yaml.safe_dump(GADGET_CRD))
            members[name].kubectl(
                "wait",
                "--for=condition=established",
                "--timeout=60s",
                "crd/gadgets.playground.clusterpedia.io",
            )
            members[name].kubectl(
                "apply", "-f", "-", input=yaml.safe_dump_all(member_objects(name))
            )
            # logs and exec through Clusterpedia act on the member as the requesting user, and
            # the host's system:masters is never passed on: the member grants the host's admin
            # (user "admin") by name, as a member's RBAC grants reach-through explicitly.
            members[name].kubectl(
                "create", "clusterrolebinding", "host-admin", "--clusterrole=cluster-admin",
                "--user=admin",
            )  # fmt: skip
        host.kubectl("apply", "-f", str(CRDS))
        host.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd", "--all")
        say("==> clusterpedia run (operator and API server; SQLite)")
        product = ProductProcess(
            workdir=base / "clusterpedia",
            kubeconfig=host.kubeconfig,
            storage_url=f"sqlite:///{base / 'clusterpedia' / 'clusterpedia.sqlite'}",
        ).start()
        try:
            say(f"    {product.url}, log {product.process.log_path}")
            say("==> APIService v1beta1.clusterpedia.io (caBundle set) through a Service")
            register_apiservice(host, port=product.port, ca_pem=product.ca_pem)
            say("==> PediaClusters " + ", ".join(MEMBERS))
            host.kubectl(
                "apply", "-f", "-",
                input=yaml.safe_dump_all([member_cluster(n, s) for n, s in members.items()]),
            )  # fmt: skip
            write_kubeconfig(kubeconfig, host, members)
            for name in MEMBERS:
                eventually(partial(_ready, host, name), timeout=120, what=f"{name} Ready")

            def everything_served() -> bool:
                result = host.kubectl(
                    f"--kubeconfig={kubeconfig}",
                    "--cluster=clusterpedia",
                    "get",
                    "pods",
                    "-A",
                    check=False,
                )
                return all(f" {m} " in result.stdout for m in MEMBERS)

            eventually(everything_served, timeout=120, what="pods of both members through the host")
            kubectl = f"kubectl --kubeconfig {kubeconfig}"
            members_list = ", ".join(MEMBERS)
            print(f"Ready: clusterpedia serves {members_list} through the host's aggregation layer")
            for command in (
                "--cluster clusterpedia get pods -A",
                "--cluster clusterpedia get deploy -A -l search.clusterpedia.io/clusters=member-1",
                "--cluster member-2 get gadgets -A",
                "--cluster member-1 logs -n shop web-0",
                "--cluster member-1 exec -n shop web-0 -- uname -s",
                "--cluster clusterpedia api-resources",
                "get pediaclusters",
                "--context playground-member-1 delete pod -n shop web-0",
            ):
                print(f"  {kubectl} {command}")
            print("Stop with Ctrl-C.", flush=True)
            while not stop.wait(1.0):
                if not product.process.running():
                    say(f"clusterpedia stopped unexpectedly:\n{product.process.log_tail()}")
                    return 1
            say("==> stopping")
        finally:
            product.stop()
    return 0
