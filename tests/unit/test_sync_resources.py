"""Resolution of syncResources against a member's discovery (pure; the integration tests
resolve against a real member)."""

from __future__ import annotations

from clusterpedia.gvr import ResourceType
from clusterpedia.kube.client import KubeError
from clusterpedia.kube.discovery import APIGroup, APIResource, Discovery
from clusterpedia.sync.resource_negotiator import ResourceNegotiator
from clusterpedia.sync.targets import SyncTarget, resolve_sync_resources

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


def test_a_failed_group_version_resolves_to_nothing_with_a_warning_not_an_error() -> None:
    broken = Discovery(
        groups=_discovery().groups,
        resources={**_discovery().resources, ("metrics.k8s.io", "v1beta1"): []},
        failed={("metrics.k8s.io", "v1beta1"): "503 service unavailable"},
    )
    targets, warnings = resolve_sync_resources(
        broken, [{"group": "metrics.k8s.io", "resources": ["podmetrics"]}]
    )
    assert targets == []
    assert warnings == ["discovery of metrics.k8s.io/v1beta1 failed: 503 service unavailable"]
    assert broken.serves(ResourceType("metrics.k8s.io", "v1beta1", "podmetrics", "")) is None
    assert broken.serves(ResourceType("apps", "v1", "deployments", "")) is True
    assert broken.serves(ResourceType("apps", "v1", "statefulsets", "")) is False


class _Member:
    """A member's discovery documents; ``down`` group/versions answer 503."""

    def __init__(self, discovery: Discovery):
        self.discovery = discovery
        self.down: set[tuple[str, str]] = set()

    async def get(self, path: str, **_: object) -> dict[str, object]:
        d = self.discovery
        if path == "/api":
            return {"versions": ["v1"]}
        if path == "/apis":
            return {
                "groups": [
                    {"name": g.name, "versions": [{"version": v} for v in g.versions]}
                    for g in d.groups.values()
                    if g.name
                ]
            }
        parts = path.strip("/").split("/")
        key = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        if key in self.down:
            raise KubeError(f"GET {path}: 503 unavailable", status=503)
        return {
            "resources": [
                {"name": r.name, "kind": r.kind, "namespaced": True, "verbs": sorted(r.verbs)}
                for r in d.resources.get(key, ())
            ]
        }


def _without(discovery: Discovery, group: str) -> Discovery:
    return Discovery(
        groups={k: v for k, v in discovery.groups.items() if k != group},
        resources={k: v for k, v in discovery.resources.items() if k[0] != group},
    )


def _negotiator(member: _Member, spec: list[dict[str, object]]) -> ResourceNegotiator:
    return ResourceNegotiator("m", member, None, spec)  # type: ignore[arg-type]


async def test_a_deleted_crd_stops_syncing_even_though_the_spec_now_names_a_missing_group() -> None:
    member = _Member(_discovery())
    negotiator = _negotiator(
        member, [{"group": "", "resources": ["pods"]}, {"group": "example.com", "resources": ["*"]}]
    )
    first = await negotiator.negotiate()
    assert first is not None
    assert sorted(str(t.rtype) for t in first) == [
        "pods.v1",
        "widgets.v1.example.com",
        "widgets.v1alpha1.example.com",
    ]
    member.discovery = _without(member.discovery, "example.com")
    second = await negotiator.negotiate()
    assert second is not None and [str(t.rtype) for t in second] == ["pods.v1"]
    assert "no API group 'example.com'" in negotiator.sync_error
    member.discovery = _discovery()  # the CRD is back: synced again, error cleared
    third = await negotiator.negotiate()
    assert third is not None and len(third) == 3 and negotiator.sync_error == ""


async def test_an_unknown_group_before_anything_was_chosen_changes_nothing() -> None:
    negotiator = _negotiator(
        _Member(_without(_discovery(), "example.com")),
        [{"group": "example.com", "resources": ["*"]}],
    )
    assert await negotiator.negotiate() is None
    assert "no API group" in negotiator.sync_error


async def test_an_aggregated_api_that_is_down_keeps_its_workers() -> None:
    member = _Member(_discovery())
    negotiator = _negotiator(
        member,
        [
            {"group": "apps", "resources": ["deployments"]},
            {"group": "metrics.k8s.io", "resources": ["podmetrics"]},
        ],
    )
    first = await negotiator.negotiate()
    assert first is not None and len(first) == 2
    member.down.add(("metrics.k8s.io", "v1beta1"))
    second = await negotiator.negotiate()
    assert second is not None
    assert sorted(str(t.rtype) for t in second) == [
        "deployments.v1.apps",
        "podmetrics.v1beta1.metrics.k8s.io",
    ]
    assert negotiator.sync_error == ""
    assert negotiator.warnings == [
        "discovery of metrics.k8s.io/v1beta1 failed: "
        "GET /apis/metrics.k8s.io/v1beta1: 503 unavailable"
    ]
    member.down.add(("", "v1"))  # the core group failing is the member failing: no answer
    assert await negotiator.negotiate() is None


async def test_the_ignore_sync_lease_gate_drops_leases_whatever_the_spec_says() -> None:
    base = _discovery()
    leases = APIResource("coordination.k8s.io", "v1", "leases", "lease", "Lease", True, LIST_WATCH)
    member = _Member(
        Discovery(
            groups={**base.groups, "coordination.k8s.io": APIGroup("coordination.k8s.io", ("v1",))},
            resources={**base.resources, ("coordination.k8s.io", "v1"): [leases]},
        )
    )
    spec = [
        {"group": "coordination.k8s.io", "resources": ["leases"]},
        {"group": "apps", "resources": ["*"]},
    ]
    kept = ResourceNegotiator("m", member, None, spec, ignore_leases=True)  # type: ignore[arg-type]
    assert [str(t.rtype) for t in await kept.negotiate() or []] == ["deployments.v1.apps"]
    synced = ResourceNegotiator("m", member, None, spec)  # type: ignore[arg-type]
    assert len(await synced.negotiate() or []) == 2


def _with_events() -> Discovery:
    base = _discovery()
    events = APIResource("", "v1", "events", "event", "Event", True, LIST_WATCH, ("ev",))
    return Discovery(
        groups=base.groups,
        resources={**base.resources, ("", "v1"): [*base.resources[("", "v1")], events]},
    )


def test_events_involved_resources_add_the_events_of_those_kinds() -> None:
    targets, _ = resolve_sync_resources(
        _with_events(),
        [
            {"group": "", "resources": ["pods"], "eventsInvolvedResources": ["pods"]},
            {"group": "apps", "resources": ["*"], "eventsInvolvedResources": ["*"]},
        ],
    )
    events = next(t for t in targets if t.rtype.resource == "events")
    assert events.event_kinds == {"Pod", "Deployment"} and events.member_field_selector == ""
    pod_event = {"involvedObject": {"kind": "Pod", "name": "web-0"}}
    assert events.admits(pod_event) and not events.admits({"involvedObject": {"kind": "Node"}})
    assert all(t.admits({}) for t in targets if t is not events)  # others store everything

    (_, one), _ = resolve_sync_resources(
        _with_events(), [{"group": "", "resources": ["Pod"], "eventsInvolvedResources": ["Pod"]}]
    )
    assert one.event_kinds == {"Pod"} and one.member_field_selector == "involvedObject.kind=Pod"


def test_events_synced_as_such_are_all_kept() -> None:
    targets, _ = resolve_sync_resources(
        _with_events(),
        [{"group": "", "resources": ["pods", "events"], "eventsInvolvedResources": ["pods"]}],
    )
    events = next(t for t in targets if t.rtype.resource == "events")
    assert events.event_kinds == frozenset() and events.admits({"involvedObject": {"kind": "Node"}})
