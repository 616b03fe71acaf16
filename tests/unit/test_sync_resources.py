"""Resolution of syncResources against a member's discovery (pure; the integration tests
resolve against a real member)."""

from __future__ import annotations

from clusterpedia.gvr import ResourceType
from clusterpedia.kube.discovery import (
    APIGroup,
    APIResource,
    Discovery,
    SyncTarget,
    resolve_sync_resources,
)

LIST_WATCH = frozenset({"get", "list", "watch"})


def _discovery() -> Discovery:
    def resource(group: str, version: str, name: str, kind: str) -> APIResource:
        return APIResource(group, version, name, name[:-1], kind, True, LIST_WATCH)

    return Discovery(
        groups={
            "": APIGroup("", ("v1",)),
            "apps": APIGroup("apps", ("v1",)),
            "metrics.k8s.io": APIGroup("metrics.k8s.io", ("v1beta1",)),
            "example.com": APIGroup("example.com", ("v1", "v1alpha1")),
            "tools.io": APIGroup("tools.io", ("v2",)),
        },
        resources={
            ("", "v1"): [resource("", "v1", "pods", "Pod")],
            ("apps", "v1"): [resource("apps", "v1", "deployments", "Deployment")],
            ("metrics.k8s.io", "v1beta1"): [
                resource("metrics.k8s.io", "v1beta1", "podmetrics", "PodMetrics")
            ],
            ("example.com", "v1"): [resource("example.com", "v1", "widgets", "Widget")],
            ("example.com", "v1alpha1"): [resource("example.com", "v1alpha1", "widgets", "Widget")],
            ("tools.io", "v2"): [resource("tools.io", "v2", "hammers", "Hammer")],
        },
    )


def test_sync_all_custom_resources_adds_every_custom_group_and_no_builtin_one() -> None:
    targets, _ = resolve_sync_resources(
        _discovery(), [{"group": "", "resources": ["pods"]}], all_custom_resources=True
    )
    assert sorted(str(t.rtype) for t in targets) == [
        "hammers.v2.tools.io",
        "pods.v1",
        "widgets.v1.example.com",
        "widgets.v1alpha1.example.com",
    ]


def test_without_the_flag_only_the_listed_entries_sync() -> None:
    targets, _ = resolve_sync_resources(_discovery(), [{"group": "", "resources": ["pods"]}])
    assert [str(t.rtype) for t in targets] == ["pods.v1"]


def test_a_field_selector_that_pins_a_namespace_becomes_the_namespaced_path() -> None:
    pods = ResourceType("", "v1", "pods", "Pod")

    def target(selector: str, *, namespaced: bool = True) -> tuple[str, str]:
        found = SyncTarget(pods, namespaced, field_selector=selector)
        return found.path, found.member_field_selector

    assert target("metadata.namespace=team-a") == ("/api/v1/namespaces/team-a/pods", "")
    assert target("status.phase=Running, metadata.namespace==team-a") == (
        "/api/v1/namespaces/team-a/pods",
        "status.phase=Running",
    )
    assert target("metadata.namespace!=team-a") == ("/api/v1/pods", "metadata.namespace!=team-a")
    assert target("status.phase=Running") == ("/api/v1/pods", "status.phase=Running")
    assert target("") == ("/api/v1/pods", "")
    nodes = SyncTarget(ResourceType("", "v1", "nodes", "Node"), False, field_selector="a=b")
    assert (nodes.path, nodes.member_field_selector) == ("/api/v1/nodes", "a=b")
