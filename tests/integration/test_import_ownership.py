"""Import policies own what they create, and templates render off the event loop: a real host
and the operator (``import_policies.py``); the storage is SQLite, as nothing here is about it.

- Two source objects whose rendered names collide (``a/b-c`` and ``a-b/c`` under
  ``<namespace>-<name>``) import neither, and the policy says so.
- A rendered name that a PediaCluster made by hand already has leaves that PediaCluster as it
  is (the lifecycle says ``NameTaken``), and deleting the source does not delete it.
- While a template renders up to its time limit, member changes go on being stored.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterpedia.kube.client import KubeError
from clusterpedia.operator.import_policies import reconcile_lifecycle
from clusterpedia.operator.runner import OperatorThread
from clusterpedia.operator.runtime import OperatorConfig
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.objects import PODS, make_object, printed_crd, storage, upsert
from clusterpedia.testing.waiting import eventually

CRDS = Path(__file__).resolve().parents[2] / "manifests" / "crds"
SOURCE_CRD = printed_crd("own.example.com", "sources", "Source", [])
POLICY = {
    "apiVersion": "policy.clusterpedia.io/v1alpha1",
    "kind": "ClusterImportPolicy",
    "metadata": {"name": "own"},
    "spec": {
        "source": {"group": "own.example.com", "resource": "sources"},
        "nameTemplate": "own-{{ .source.metadata.namespace }}-{{ .source.metadata.name }}",
        "template": (
            "spec:\n"
            "  apiserver: {{ .source.spec.endpoint }}\n"
            "  tokenData: dG9rZW4=\n"
            "  syncResources: [{group: '', resources: [configmaps]}]\n"
        ),
    },
}
HAND_MADE = "https://127.0.0.1:1"


@pytest.fixture(scope="module")
def host(control_plane: ControlPlane) -> APIServer:
    server = control_plane.apiservers.get("host") or control_plane.add_apiserver("host")
    server.kubectl("apply", "-k", str(CRDS))
    server.kubectl("apply", "-f", "-", input=json.dumps(SOURCE_CRD))
    server.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd", "--all")
    return server


@pytest.fixture(scope="module")
def operator(host: APIServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    database = tmp_path_factory.mktemp("ownership") / "db.sqlite"
    thread = OperatorThread(
        OperatorConfig(
            storage_url=f"sqlite:///{database}",
            kubeconfig=str(host.kubeconfig),
            import_interval=1.0,
        )
    )
    thread.start()
    yield
    thread.stop()
    assert not thread.failed, thread.error


def source(host: APIServer, namespace: str, name: str, endpoint: str) -> None:
    host.kubectl("create", "namespace", namespace, check=False)
    body = {
        "apiVersion": "own.example.com/v1",
        "kind": "Source",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"endpoint": endpoint},
    }
    host.kubectl("apply", "-f", "-", input=json.dumps(body))


def get(host: APIServer, kind: str, name: str) -> dict[str, Any] | None:
    found = host.kubectl("get", kind, name, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for item in ((obj or {}).get("status") or {}).get("conditions") or ():
        if item["type"] == kind:
            return dict(item)
    return {}


def test_a_policy_takes_over_nothing_it_did_not_create(host: APIServer, operator: None) -> None:
    # A PediaCluster made by hand, with the name the policy will render for o-x/hand.
    hand_made = {
        "apiVersion": "cluster.clusterpedia.io/v1alpha2",
        "kind": "PediaCluster",
        "metadata": {"name": "own-o-x-hand"},
        "spec": {"apiserver": HAND_MADE, "tokenData": "aGFuZA==", "syncResources": []},
    }
    host.kubectl("apply", "-f", "-", input=json.dumps(hand_made))
    source(host, "o-a", "b-c", "https://127.0.0.1:2")
    source(host, "o-a-b", "c", "https://127.0.0.1:3")
    source(host, "o-x", "hand", "https://127.0.0.1:4")
    source(host, "o-x", "fine", "https://127.0.0.1:5")
    host.kubectl("apply", "-f", "-", input=json.dumps(POLICY))
    try:
        imported = eventually(
            lambda: get(host, "pediacluster", "own-o-x-fine"), what="the unique source imported"
        )
        assert imported["metadata"]["ownerReferences"][0]["kind"] == "PediaClusterLifecycle"

        def refused() -> str:
            message = condition(get(host, "clusterimportpolicy", "own"), "Reconciling")
            text = str(message.get("message", ""))
            return text if "none is imported" in text and "own-o-x-hand" in text else ""

        message = eventually(refused, what="the policy reports both refusals")
        assert "own-o-a-b-c: rendered for several sources (o-a-b/c, o-a/b-c)" in message
        assert "PediaCluster own-o-x-hand exists and was not created by this lifecycle" in message
        assert get(host, "pediaclusterlifecycle", "own-o-a-b-c") is None
        assert get(host, "pediacluster", "own-o-a-b-c") is None
        lifecycle = get(host, "pediaclusterlifecycle", "own-o-x-hand")
        assert condition(lifecycle, "Created")["reason"] == "NameTaken"
        kept = get(host, "pediacluster", "own-o-x-hand")
        assert kept is not None and kept["spec"]["apiserver"] == HAND_MADE
        assert not kept["metadata"].get("ownerReferences")

        # Its source goes, and so does its lifecycle; the hand-made PediaCluster stays.
        host.kubectl("delete", "source.own.example.com", "hand", "-n", "o-x")
        eventually(
            lambda: get(host, "pediaclusterlifecycle", "own-o-x-hand") is None,
            what="the lifecycle goes with its source",
        )
        kept = get(host, "pediacluster", "own-o-x-hand")
        assert kept is not None and kept["spec"]["apiserver"] == HAND_MADE
    finally:
        host.kubectl("delete", "clusterimportpolicy", "own", "--timeout=60s")
        host.kubectl(
            "delete", "pediacluster", "own-o-x-hand", "own-o-x-fine", "--ignore-not-found",
            "--timeout=60s",
        )  # fmt: skip


class SourceOnlyHost:
    """The host as a lifecycle round sees it: its source object, no PediaCluster yet (a
    small fake: the subject is where the render runs, not the host)."""

    def __init__(self, obj: dict[str, Any]):
        self.obj = obj

    async def get(self, path: str, **_: Any) -> Any:
        await asyncio.sleep(0)
        if "/pediaclusters/" in path:
            raise KubeError("not found", status=404)
        return self.obj


@pytest.mark.asyncio
async def test_changes_are_stored_while_a_hostile_template_renders(tmp_path: Path) -> None:
    """A template that does heavy work per step (toYaml of a 40 KB object in a range over its
    400 keys) renders until its time limit; meanwhile a writer on the same event loop keeps
    storing. Rendered on the event loop it would hold the loop for the whole render, and no
    write would finish before it."""
    blob = {f"k{i:03d}": "x" * 100 for i in range(400)}
    obj = {"metadata": {"name": "s", "namespace": "n"}, "spec": {"blob": blob}}
    lifecycle = {
        "metadata": {"name": "hostile", "uid": "u"},
        "spec": {
            "source": {"group": "own.example.com", "version": "v1", "resource": "sources",
                       "namespace": "n", "name": "s"},
            "template": "{{ range .source.spec.blob }}{{ $y := toYaml $.source }}{{ end }}",
        },
    }  # fmt: skip
    async with storage(f"sqlite:///{tmp_path / 'db.sqlite'}") as (writer, _):
        rendering = asyncio.create_task(reconcile_lifecycle(SourceOnlyHost(obj), lifecycle))  # type: ignore[arg-type]
        stored = 0
        while not rendering.done():
            pod = make_object(PODS, name=f"p-{stored}", cluster="other", rv=str(stored + 1))
            stored += await writer.apply(cluster="other", rtype=PODS, changes=[upsert(pod)])
        conditions = await rendering
    assert conditions[0]["reason"] == "TemplateBudgetExceeded"
    assert "ran longer than its 2s" in conditions[0]["message"]
    assert stored >= 3, f"only {stored} changes were stored while the template rendered"


def test_reference_secret_data_in_the_template_never_reaches_a_status(
    host: APIServer, operator: None
) -> None:
    """A template whose YAML output does not parse around a Secret's token: the lifecycle's
    status gives position and reason, never the token."""
    token = "t0p-s3cr3t-v4lue"
    host.kubectl("create", "namespace", "o-s", check=False)
    host.kubectl(
        "create", "secret", "generic", "creds", "-n", "o-s", f"--from-literal=token={token}",
        check=False,
    )  # fmt: skip
    source(host, "o-s", "leaky", "https://127.0.0.1:6")
    policy = json.loads(json.dumps(POLICY))
    policy["metadata"]["name"] = "leaky"
    policy["spec"]["nameTemplate"] = "leaky-{{ .source.metadata.name }}"
    policy["spec"]["references"] = [
        {"key": "creds", "group": "", "resource": "secrets", "namespaceTemplate": "o-s",
         "nameTemplate": "creds"}
    ]  # fmt: skip
    policy["spec"]["template"] = "spec:\n  tokenData: '{{ .references.creds.data.token }}\n"
    host.kubectl("apply", "-f", "-", input=json.dumps(policy))
    try:
        created = eventually(
            lambda: condition(get(host, "pediaclusterlifecycle", "leaky-leaky"), "Created"),
            what="the lifecycle's verdict",
        )
        assert created["reason"] == "InvalidTemplate"
        assert "does not render YAML" in created["message"] and "line" in created["message"]
        encoded = base64.b64encode(token.encode()).decode()
        everything = host.kubectl("get", "pediaclusterlifecycle", "leaky-leaky", "-o", "json")
        assert encoded not in everything.stdout and token not in everything.stdout
    finally:
        host.kubectl("delete", "clusterimportpolicy", "leaky", "--timeout=60s")
