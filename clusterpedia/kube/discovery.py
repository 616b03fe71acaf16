"""Member discovery: the groups, versions and resources a member serves, with what failed.

What to sync of it is the synchro's decision (``sync/targets.py``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from clusterpedia.gvr import ResourceType
from clusterpedia.kube.client import KubeClient, KubeError

# Groups whose resources are compiled into Kubernetes (a custom resource can't use them).
_BUILTIN_GROUPS = {"", "apps", "batch", "autoscaling", "policy", "extensions"}
_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


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
