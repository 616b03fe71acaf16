"""Member discovery and the resolution of a PediaCluster's ``syncResources``.

Rules of the original (``resource_negotiator.go``), kept:

- ``group: "*"`` means every group; ``resources: ["*"]`` every listable resource of a group;
  names are case-insensitive and a singular name maps to its plural;
- built-in kinds sync exactly one version, the member's preferred one for the group (or the
  next that serves the resource); ``versions`` is ignored for them;
- custom resources: no ``versions`` = the first three the member serves in Kubernetes'
  version order (v1 > v1beta1 > v1alpha1), ``["*"]`` = all, a list = the intersection;
- resources without both ``list`` and ``watch`` are skipped, as are subresources.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clusterpedia.gvr import ResourceType
from clusterpedia.kube.client import KubeClient, KubeError

# Groups whose resources are compiled into Kubernetes (a custom resource can't use them).
_BUILTIN_GROUPS = {"", "apps", "batch", "autoscaling", "policy", "extensions"}
_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")
CUSTOM_RESOURCE_DEFAULT_VERSIONS = 3


def is_builtin_group(group: str) -> bool:
    return group in _BUILTIN_GROUPS or group.endswith(".k8s.io")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key of Kubernetes' version order: GA > beta > alpha, higher numbers first,
    then anything non-standard alphabetically."""
    match = _VERSION.match(version)
    if not match:
        return (3, 0, 0, version)
    major, stage, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0), version)


@dataclass(frozen=True, slots=True)
class APIResource:
    group: str
    version: str
    name: str  # plural
    singular: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def listable(self) -> bool:
        return {"list", "watch"} <= self.verbs


@dataclass(frozen=True, slots=True)
class APIGroup:
    name: str
    versions: tuple[str, ...]  # the member's order: preferred first


@dataclass(frozen=True)
class Discovery:
    """What a member serves: groups in preference order and resources per group/version."""

    groups: Mapping[str, APIGroup]
    resources: Mapping[tuple[str, str], Sequence[APIResource]]
    # group/versions whose document could not be read (an aggregated API that is down):
    # what they serve is unknown, which is not the same as serving nothing
    failed: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def serves(self, rtype: ResourceType) -> bool | None:
        """Whether the member serves ``rtype``; None when its group/version failed."""
        key = (rtype.group, rtype.version)
        if key in self.failed:
            return None
        return any(r.name == rtype.resource for r in self.resources.get(key, ()))

    def find(self, group: str, version: str, name: str) -> APIResource | None:
        lowered = name.lower()
        for resource in self.resources.get((group, version), ()):
            if lowered in (resource.name, resource.singular.lower(), resource.kind.lower()):
                return resource
        return None


async def discover(client: KubeClient) -> Discovery:
    """Read the member's discovery documents (legacy, per group/version)."""
    core, apis = await asyncio.gather(client.get("/api"), client.get("/apis"))
    groups = {"": APIGroup(name="", versions=tuple(core.get("versions") or ["v1"]))}
    for group in apis.get("groups") or []:
        versions = [v["version"] for v in group.get("versions") or []]
        preferred = (group.get("preferredVersion") or {}).get("version")
        if preferred in versions:
            versions.remove(preferred)
            versions.insert(0, preferred)
        groups[group["name"]] = APIGroup(name=group["name"], versions=tuple(versions))

    failed: dict[tuple[str, str], str] = {}

    async def resources_of(group: str, version: str) -> tuple[tuple[str, str], list[APIResource]]:
        path = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        try:
            document = await client.get(path)
        except KubeError as error:
            # The member answered but this group/version did not (client-go's partial
            # discovery): the rest is still worth using. No answer at all fails the whole.
            if not group or error.status == 0:
                raise
            if error.status != 404:  # 404: gone since /apis was read, so serves nothing
                failed[(group, version)] = str(error)[:300]
            return (group, version), []
        return (group, version), [
            APIResource(
                group=group,
                version=version,
                name=item["name"],
                singular=item.get("singularName") or "",
                kind=item.get("kind", ""),
                namespaced=bool(item.get("namespaced")),
                verbs=frozenset(item.get("verbs") or ()),
                short_names=tuple(item.get("shortNames") or ()),
                categories=tuple(item.get("categories") or ()),
            )
            for item in document.get("resources") or []
            if "/" not in item["name"]
        ]

    pairs = [(g.name, v) for g in groups.values() for v in g.versions]
    results = await asyncio.gather(*(resources_of(g, v) for g, v in pairs))
    return Discovery(groups=groups, resources=dict(results), failed=failed)


@dataclass(frozen=True, slots=True)
class SyncTarget:
    """One resource type of one member to list and watch."""

    rtype: ResourceType
    namespaced: bool
    label_selector: str = ""
    field_selector: str = ""
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # Events only: the involvedObject kinds to keep (eventsInvolvedResources); empty = all
    event_kinds: frozenset[str] = frozenset()

    def admits(self, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` is stored: an Event of an involved kind, or anything otherwise."""
        if not self.event_kinds:
            return True
        return str((obj.get("involvedObject") or {}).get("kind", "")) in self.event_kinds

    @property
    def path(self) -> str:
        """Where to list and watch: the namespace's own path when the field selector pins
        one (see :meth:`member_field_selector`)."""
        prefix = (
            f"/apis/{self.rtype.group}/{self.rtype.version}"
            if self.rtype.group
            else f"/api/{self.rtype.version}"
        )
        namespace, _ = self._pinned_namespace()
        if namespace:
            return f"{prefix}/namespaces/{namespace}/{self.rtype.resource}"
        return f"{prefix}/{self.rtype.resource}"

    @property
    def member_field_selector(self) -> str:
        """The field selector to send with :attr:`path`: without a ``metadata.namespace=X``
        term, which the path already says. Besides being cheaper for the member, this avoids
        a member bug: kube-apiserver v1.35 pages a cluster-wide list with that selector
        wrongly (its continue token is relative to the namespace, so when the namespace sorts
        before the last name of a page, every later page is empty)."""
        return self._pinned_namespace()[1]

    def _pinned_namespace(self) -> tuple[str, str]:
        """(the namespace an equality term pins, the other terms) of the field selector."""
        terms = [term.strip() for term in self.field_selector.split(",") if term.strip()]
        if self.namespaced:
            for index, term in enumerate(terms):
                key, _, value = term.partition("==") if "==" in term else term.partition("=")
                if key.strip() == "metadata.namespace" and value.strip():
                    return value.strip(), ",".join(terms[:index] + terms[index + 1 :])
        return "", self.field_selector


class SyncResourcesError(ValueError):
    """A syncResources entry cannot be satisfied by the member (unknown group or resource)."""


def _candidate_versions(
    discovery: Discovery, group: APIGroup, entry: Mapping[str, Any]
) -> list[str]:
    if is_builtin_group(group.name):
        return list(group.versions)  # preferred first; the resource decides below
    wanted = entry.get("versions") or []
    served = sorted(group.versions, key=version_priority)
    if "*" in wanted:
        return served
    if wanted:
        return [v for v in served if v in wanted]
    return served[:CUSTOM_RESOURCE_DEFAULT_VERSIONS]


def resolve_sync_resources(
    discovery: Discovery,
    entries: Iterable[Mapping[str, Any]],
    *,
    all_custom_resources: bool = False,
) -> tuple[list[SyncTarget], list[str]]:
    """The targets ``entries`` select on this member, and warnings for what was skipped.

    ``all_custom_resources`` (the PediaCluster's ``syncAllCustomResources``) adds every
    resource of every group that is not built into Kubernetes, with the custom resource
    version rules.

    Raises :class:`SyncResourcesError` for a group or resource the member does not serve
    (a typo should be visible, not silently sync nothing). A group/version whose discovery
    failed resolves to nothing, with a warning; the caller decides what its workers do.
    """
    targets: dict[tuple[str, str, str], SyncTarget] = {}
    warnings: list[str] = []
    entries = list(entries)
    if all_custom_resources:
        entries += [
            {"group": group, "resources": ["*"]}
            for group in discovery.groups
            if not is_builtin_group(group)
        ]
    event_kinds: set[str] = set()
    for entry in entries:
        group_name = str(entry.get("group", ""))
        involved = [str(n).lower() for n in entry.get("eventsInvolvedResources") or ()]
        names = [str(n) for n in entry.get("resources") or []]
        selectors = {
            "label_selector": str(entry.get("labelSelector") or ""),
            "field_selector": str(entry.get("fieldSelector") or ""),
        }
        groups = (
            list(discovery.groups.values())
            if group_name == "*"
            else [discovery.groups.get(group_name)]
        )
        if groups == [None]:
            raise SyncResourcesError(f"the member serves no API group {group_name!r}")
        for group in groups:
            assert group is not None
            versions = _candidate_versions(discovery, group, entry)
            unknown = [v for v in versions if (group.name, v) in discovery.failed]
            for version in unknown:
                reason = discovery.failed[(group.name, version)]
                note = f"discovery of {group.name}/{version} failed: {reason}"
                if note not in warnings:
                    warnings.append(note)
            builtin = is_builtin_group(group.name)
            wanted_names = (
                names
                if "*" not in names
                else sorted(
                    {
                        r.name
                        for v in versions
                        for r in discovery.resources.get((group.name, v), ())
                        if r.listable
                    }
                )
            )
            for name in wanted_names:
                found = [r for v in versions if (r := discovery.find(group.name, v, name))]
                if not found:
                    if group_name == "*" or "*" in names or unknown:
                        continue  # a failed group/version may serve it: not a typo
                    raise SyncResourcesError(
                        f"the member serves no resource {name!r} in group {group.name!r}"
                    )
                chosen = found[:1] if builtin else found
                for resource in chosen:
                    if not resource.listable:
                        label = f"{resource.name}.{resource.group or 'core'}"
                        warnings.append(f"{label} cannot be listed and watched; skipped")
                        continue
                    rtype = ResourceType(
                        group=resource.group,
                        version=resource.version,
                        resource=resource.name,
                        kind=resource.kind,
                    )
                    targets[(rtype.group, rtype.version, rtype.resource)] = SyncTarget(
                        rtype=rtype,
                        namespaced=resource.namespaced,
                        singular=resource.singular,
                        short_names=resource.short_names,
                        categories=resource.categories,
                        label_selector=selectors["label_selector"],
                        field_selector=selectors["field_selector"],
                    )
                    if "*" in involved or name.lower() in involved or resource.name in involved:
                        event_kinds.add(resource.kind)
    if event_kinds:
        _add_events_of(discovery, targets, frozenset(event_kinds))
    return list(targets.values()), warnings


def _add_events_of(
    discovery: Discovery, targets: dict[tuple[str, str, str], SyncTarget], kinds: frozenset[str]
) -> None:
    """core/v1 Events of the involved kinds (all Events when an entry syncs them anyway). One
    kind is also selected by the member (``involvedObject.kind``); several are filtered here,
    since a field selector cannot say "one of"."""
    events = discovery.find("", "v1", "events")
    if events is None or ("", "v1", "events") in targets:
        return
    targets[("", "v1", "events")] = SyncTarget(
        rtype=ResourceType("", "v1", "events", events.kind),
        namespaced=True,
        singular=events.singular,
        short_names=events.short_names,
        categories=events.categories,
        field_selector=f"involvedObject.kind={next(iter(kinds))}" if len(kinds) == 1 else "",
        event_kinds=kinds,
    )
