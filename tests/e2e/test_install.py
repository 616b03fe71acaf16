"""The manifests as an operator of a cluster would apply them: accepted by a real
kube-apiserver, and their RBAC is enough — clusterpedia runs with exactly the ServiceAccount's
rights in the host and the member ClusterRole's rights in a member, and syncs and serves."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from clusterpedia.apiserver.testing import PREFIX, register_apiservice
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
NAMESPACE = "clusterpedia-system"


@pytest.mark.parametrize(
    "kustomization", ["", "variants/postgresql", "variants/mysql", "variants/sharded"]
)
def test_every_kustomization_is_accepted_by_the_api_server(
    host: APIServer, kustomization: str
) -> None:
    result = host.kubectl(
        "apply", "-k", str(MANIFESTS / kustomization), "--dry-run=server", check=False
    )
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/clusterpedia" in result.stdout
    assert "apiservice.apiregistration.k8s.io/v1beta1.clusterpedia.io" in result.stdout


def test_member_role_and_example_are_accepted(host: APIServer) -> None:
    for path in (
        MANIFESTS / "member" / "clusterrole.yaml",
        MANIFESTS / "member" / "impersonate.yaml",
        MANIFESTS / "examples" / "pediacluster.yaml",
    ):
        result = host.kubectl("apply", "-f", str(path), "--dry-run=server", check=False)
        assert result.returncode == 0, result.stderr


def _token_kubeconfig(server: APIServer, token: str, path: Path) -> Path:
    config = server.kubeconfig_dict()
    config["users"][0]["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_service_account_rbac_is_enough_to_sync_and_serve(
    host: APIServer, member_clusters: list[APIServer], tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'clusterpedia.sqlite'}"  # the manifests' default
    # Host: the ServiceAccount and its bindings, exactly as the manifests define them.
    host.kubectl("apply", "-f", str(MANIFESTS / "base" / "rbac.yaml"))
    token = host.kubectl("create", "token", "clusterpedia", "-n", NAMESPACE, "--duration=1h").stdout
    kubeconfig = _token_kubeconfig(host, token.strip(), tmp_path / "host.kubeconfig")
    # Member: a ServiceAccount bound to the member ClusterRole only.
    member = member_clusters[0]
    member.kubectl("apply", "-f", str(MANIFESTS / "member" / "clusterrole.yaml"))
    member.kubectl("create", "namespace", "rbac-check", check=False)
    member.kubectl("create", "serviceaccount", "reader", "-n", "rbac-check", check=False)
    member.kubectl(
        "create", "clusterrolebinding", "clusterpedia-member-reader",
        "--clusterrole=clusterpedia-member-reader", "--serviceaccount=rbac-check:reader",
        check=False,
    )  # fmt: skip
    member.kubectl(
        "create", "configmap", "visible", "-n", "rbac-check", "--from-literal=a=1", check=False
    )
    member_token = member.kubectl(
        "create", "token", "reader", "-n", "rbac-check", "--duration=1h"
    ).stdout

    # With --sharding, so the Leases of automatic sharding are within the rights too.
    product = ProductProcess(
        workdir=tmp_path / "product",
        kubeconfig=kubeconfig,
        storage_url=database_url,
        extra_args=("--sharding",),
    ).start()
    try:
        register_apiservice(host, port=product.port, ca_pem=product.ca_pem)
        cluster = {
            "apiVersion": "cluster.clusterpedia.io/v1alpha2",
            "kind": "PediaCluster",
            "metadata": {"name": "rbac-check"},
            "spec": {
                "apiserver": member.url,
                "caData": base64.b64encode(member.pki.serving_ca.read_bytes()).decode(),
                "tokenData": base64.b64encode(member_token.strip().encode()).decode(),
                "syncResources": [
                    {
                        "group": "",
                        "resources": ["configmaps"],
                        "fieldSelector": "metadata.namespace=rbac-check",
                    }
                ],
            },
        }
        host.kubectl("apply", "-f", "-", input=json.dumps(cluster))

        def listed() -> bool:
            result = host.kubectl(
                f"--server={host.url}{PREFIX}", "get", "configmaps", "-A", check=False
            )
            return "visible" in result.stdout

        eventually(listed, what="the member's ConfigMap through the aggregator")

        def ready() -> bool:
            found = json.loads(
                host.kubectl("get", "pediacluster", "rbac-check", "-o", "json").stdout
            )
            conditions = {
                c["type"]: c["status"] for c in (found.get("status") or {}).get("conditions") or []
            }
            return conditions.get("Ready") == "True"

        eventually(ready, what="the PediaCluster's status written with the ServiceAccount's rights")
        log = product.log()
        assert "Forbidden" not in log and "forbidden" not in log, log[-3000:]
        # Credentials never leave the Secret/spec they came in: not in our log, the status or
        # the events we wrote.
        status = json.dumps(
            json.loads(host.kubectl("get", "pediacluster", "rbac-check", "-o", "json").stdout)[
                "status"
            ]
        )
        events = host.kubectl("get", "events", "-A", "-o", "json").stdout
        for credential in (member_token.strip(), token.strip()):
            assert credential not in log and credential not in status and credential not in events
    finally:
        # Removed while our operator runs (its finalizer needs it), so no other test finds it.
        host.kubectl("delete", "pediacluster", "rbac-check", "--timeout=60s", check=False)
        assert product.stop() == 0
