"""Kubernetes discovery documents built from the catalog of synced types.

Served for the union of all clusters (``.../resources``) or one cluster
(``.../resources/clusters/<name>``), in the legacy form (``APIVersions``, ``APIGroupList``,
``APIGroup``, ``APIResourceList``) and the aggregated form (``APIGroupDiscoveryList`` v2 and
v2beta1) that kubectl asks for first. Only ``get``, ``list`` and ``watch`` are advertised:
never a verb we do not serve (namespace deletion and garbage collection act on advertised
``delete``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from clusterpedia.gvr import group_version
from clusterpedia.kube.discovery import version_priority
from clusterpedia.storage import SyncedType

from .negotiation import Form

VERBS = ["get", "list", "watch"]
V2_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"


class ServedTypes:
    """The synced types of one scope, deduplicated across clusters and indexed."""

    def __init__(self, types: Iterable[SyncedType]):
        self.by_gvr: dict[tuple[str, str, str], SyncedType] = {}
        for synced in types:
            self.by_gvr.setdefault((synced.group, synced.version, synced.resource), synced)

    def find(self, group: str, version: str, resource: str) -> SyncedType | None:
        return self.by_gvr.get((group, version, resource))

    def groups(self) -> dict[str, list[str]]:
        """Group -> versions, preferred first (Kubernetes' version order)."""
        versions: dict[str, set[str]] = {}
        for group, version, _ in self.by_gvr:
            versions.setdefault(group, set()).add(version)
        return {
            group: sorted(found, key=version_priority) for group, found in sorted(versions.items())
        }

    def resources(self, group: str, version: str) -> list[SyncedType]:
        return [t for (g, v, _), t in sorted(self.by_gvr.items()) if g == group and v == version]


def api_versions(catalogue: ServedTypes) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "apiVersion": "v1",
        "versions": catalogue.groups().get("", []),
        "serverAddressByClientCIDRs": [],
    }


def api_group(group: str, versions: Sequence[str]) -> dict[str, Any]:
    entries = [
        {"groupVersion": group_version(group, version), "version": version} for version in versions
    ]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def api_group_list(catalogue: ServedTypes) -> dict[str, Any]:
    groups = [api_group(g, vs) for g, vs in catalogue.groups().items() if g]
    for group in groups:
        del group["kind"], group["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_resource_list(group: str, version: str, types: Sequence[SyncedType]) -> dict[str, Any]:
    resources = []
    for synced in types:
        resource: dict[str, Any] = {
            "name": synced.resource,
            "singularName": synced.singular or synced.kind.lower(),
            "namespaced": synced.namespaced,
            "kind": synced.kind,
            "verbs": VERBS,
        }
        if synced.short_names:
            resource["shortNames"] = list(synced.short_names)
        if synced.categories:
            resource["categories"] = list(synced.categories)
        resources.append(resource)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": resources,
    }


def _v2_resource(synced: SyncedType) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resource": synced.resource,
        "responseKind": {"group": synced.group, "version": synced.version, "kind": synced.kind},
        "scope": "Namespaced" if synced.namespaced else "Cluster",
        "singularResource": synced.singular or synced.kind.lower(),
        "verbs": VERBS,
    }
    if synced.short_names:
        resource["shortNames"] = list(synced.short_names)
    if synced.categories:
        resource["categories"] = list(synced.categories)
    return resource


def aggregated(catalogue: ServedTypes, *, core: bool, form: Form) -> dict[str, Any]:
    """``APIGroupDiscoveryList`` of the core group (``/api``) or the named groups (``/apis``)."""
    version = "v2" if form is Form.DISCOVERY_V2 else "v2beta1"
    items = [
        {
            "metadata": {"name": group},
            "versions": [
                {
                    "version": v,
                    "freshness": "Current",
                    "resources": [_v2_resource(t) for t in catalogue.resources(group, v)],
                }
                for v in versions
            ],
        }
        for group, versions in catalogue.groups().items()
        if (group == "") == core
    ]
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }


def v2_content_type(form: Form) -> str:
    return V2_CONTENT_TYPE.format(version="v2" if form is Form.DISCOVERY_V2 else "v2beta1")
