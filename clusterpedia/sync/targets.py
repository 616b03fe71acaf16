"""Which of a member's types to sync: a PediaCluster's ``syncResources`` resolved against the
member's discovery, into :class:`SyncTarget` s (what the original does in
``clustersynchro/resource_negotiator.go``).

Rules of the original, kept:

- ``group: "*"`` means every group; ``resources: ["*"]`` every listable resource of a group;
  names are case-insensitive and a singular name maps to its plural;
- built-in kinds sync exactly one version, the member's preferred one for the group (or the
  next that serves the resource); ``versions`` is ignored for them;
- custom resources: no ``versions`` = the first three the member serves in Kubernetes'
  version order (v1 > v1beta1 > v1alpha1), ``["*"]`` = all, a list = the intersection;
- resources without both ``list`` and ``watch`` are skipped, as are subresources.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clusterpedia.gvr import ResourceType
from clusterpedia.kube.discovery import APIGroup, Discovery, is_builtin_group, version_priority

CUSTOM_RESOURCE_DEFAULT_VERSIONS = 3


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
