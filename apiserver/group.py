"""The ``clusterpedia.io`` group itself: its discovery and ``collectionresources``.

Owns ``/apis`` (the document the aggregator reads to learn this server's group),
``/apis/clusterpedia.io``, ``/apis/clusterpedia.io/v1beta1`` and the collection resources;
the ``resources`` prefix and everything else is delegated.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from clusterpedia.gvr import group_version
from clusterpedia.kube.discovery import is_builtin_group
from clusterpedia.search.params import query_from_request, split_list
from clusterpedia.storage import Catalog, ObjectReads, TypeFilter

from .chain import Handler
from .discovery import v2_content_type
from .lists import metadata_wrapper, page_body
from .negotiation import Form, negotiate
from .printers import Column, age
from .requestinfo import record_of, search_values
from .scope import narrow_clusters, visible_types
from .status import StatusError, json_response, not_found
from .tables import CLUSTER

GROUP, VERSION = "clusterpedia.io", "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
_OWN_RESOURCES = [
    {
        "name": "collectionresources",
        "singularName": "collectionresource",
        "namespaced": False,
        "kind": "CollectionResource",
        "verbs": ["get", "list"],
    },
    {
        "name": "resources",
        "singularName": "resources",
        "namespaced": False,
        "kind": "Resources",
        "verbs": ["get"],
    },
]
COLLECTIONS: dict[str, list[dict[str, str]]] = {
    "any": [],
    "workloads": [
        {"group": "apps", "resource": "deployments"},
        {"group": "apps", "resource": "daemonsets"},
        {"group": "apps", "resource": "statefulsets"},
    ],
    "kuberesources": [{"group": "*"}],  # every built-in group
}
_COLLECTION_COLUMNS = [
    CLUSTER,
    Column("Group"),
    Column("Version"),
    Column("Kind"),
    Column("Namespace"),
    Column("Name", format="name"),
    Column("Age"),
]


def group_document() -> dict[str, Any]:
    version = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {"name": GROUP, "versions": [version], "preferredVersion": version}


def aggregated_group(form: Form) -> dict[str, Any]:
    """Our group in ``APIGroupDiscoveryList`` form, as the aggregator's discovery merge reads it."""
    resources = [
        {
            "resource": r["name"],
            "responseKind": {"group": GROUP, "version": VERSION, "kind": r["kind"]},
            "scope": "Cluster",
            "singularResource": r["singularName"],
            "verbs": r["verbs"],
        }
        for r in _OWN_RESOURCES
    ]
    version = "v2" if form is Form.DISCOVERY_V2 else "v2beta1"
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": [
            {
                "metadata": {"name": GROUP},
                "versions": [{"version": VERSION, "freshness": "Current", "resources": resources}],
            }
        ],
    }


class GroupServer:
    """Serves the clusterpedia.io group's own paths."""

    def __init__(self, *, reader: ObjectReads, catalog: Catalog):
        self.reader = reader
        self.catalog = catalog

    async def __call__(self, request: web.Request, delegate: Handler) -> web.StreamResponse:
        parts = list(record_of(request).parts)
        if parts == ["apis"]:
            form = negotiate(
                request.headers.get("Accept"),
                allowed={Form.JSON, Form.DISCOVERY_V2, Form.DISCOVERY_V2BETA1},
            )
            if form is Form.JSON:
                return json_response(
                    {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_document()]}
                )
            return web.Response(
                body=orjson.dumps(aggregated_group(form)),
                headers={"Content-Type": v2_content_type(form), "Vary": "Accept"},
            )
        if parts == ["apis", GROUP]:
            return json_response({"kind": "APIGroup", "apiVersion": "v1", **group_document()})
        if parts == ["apis", GROUP, VERSION]:
            return json_response(
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": GROUP_VERSION,
                    "resources": _OWN_RESOURCES,
                }
            )
        if parts[:4] == ["apis", GROUP, VERSION, "collectionresources"] and len(parts) <= 5:
            if len(parts) == 4:
                return self._collection_list(request)
            return await self._collection(request, parts[4])
        return await delegate(request)

    def _collection_list(self, request: web.Request) -> web.Response:
        items = [
            {"metadata": {"name": name}, "resourceTypes": types}
            for name, types in COLLECTIONS.items()
        ]
        return json_response(
            {
                "kind": "CollectionResourceList",
                "apiVersion": GROUP_VERSION,
                "metadata": {},
                "items": items,
            }
        )

    async def _types(self, request: web.Request, name: str) -> tuple[TypeFilter, ...]:
        if name == "workloads":
            return tuple(TypeFilter(t["group"], None, t["resource"]) for t in COLLECTIONS[name])
        if name == "kuberesources":
            synced = {t.group for t in await visible_types(request, self.catalog)}
            return tuple(TypeFilter(g) for g in sorted(synced) if is_builtin_group(g))
        groups = split_list(request.query.get("groups", ""), what="groups")
        resources = split_list(request.query.get("resources", ""), what="resources")
        if not groups and not resources:
            raise StatusError(400, "url query - `groups` or `resources` is required")
        filters: list[TypeFilter] = []
        if "*" in groups:
            return ()
        for group in groups:
            g, _, v = group.partition("/")
            filters.append(TypeFilter(g, v or None))
        for resource in resources:
            pieces = resource.split("/")
            if len(pieces) == 2:
                filters.append(TypeFilter(pieces[0], None, pieces[1]))
            elif len(pieces) == 3:
                filters.append(TypeFilter(pieces[0], pieces[1], pieces[2]))
            else:
                raise StatusError(
                    400,
                    f"invalid resource {resource!r}: use group/resource or group/version/resource",
                )
        return tuple(filters)

    async def _collection(self, request: web.Request, name: str) -> web.Response:
        if name not in COLLECTIONS:
            raise not_found("collectionresources", name, group=GROUP)
        if request.query.get("watch") in ("true", "1"):
            raise StatusError(
                405, "watch is not supported on collectionresources: watch each resource instead"
            )
        form = negotiate(request.headers.get("Accept"), allowed={Form.JSON, Form.TABLE})
        types = await self._types(request, name)
        if name == "kuberesources" and not types:
            return self._collection_response(name, form, [], None, None)
        query = query_from_request(search_values(request), types=types)
        if query.owner is not None:
            raise StatusError(400, "owner search is not supported for collection resources")
        if query.inject_events:
            raise StatusError(400, "injectEvents is not supported for collection resources")
        clusters = narrow_clusters(request, query.clusters)
        if clusters is None:
            return self._collection_response(name, form, [], None, None)
        query = replace(
            query, clusters=clusters, metadata_only=query.metadata_only or form is Form.TABLE
        )
        page = await self.reader.list(query)
        return self._collection_response(
            name,
            form,
            page.items,
            page.continue_token,
            page.remaining_count,
            metadata_only=query.metadata_only,
        )

    def _collection_response(
        self,
        name: str,
        form: Form,
        items: list[Any],
        continue_token: str | None,
        remaining: int | None,
        *,
        metadata_only: bool = False,
    ) -> web.Response:
        if form is Form.TABLE:
            rows = []
            for item in items:
                metadata = orjson.loads(item.data)
                rows.append(
                    {
                        "cells": [
                            item.cluster,
                            item.group,
                            item.version,
                            item.kind,
                            metadata.get("namespace", ""),
                            metadata.get("name", ""),
                            age(metadata.get("creationTimestamp")),
                        ],
                        "object": {
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": metadata,
                        },
                    }
                )
            return json_response(
                {
                    "kind": "Table",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"continue": continue_token} if continue_token else {},
                    "columnDefinitions": [c.definition() for c in _COLLECTION_COLUMNS],
                    "rows": rows,
                }
            )
        types: dict[tuple[str, str, str], dict[str, str]] = {}
        datas = []
        for item in items:
            types.setdefault(
                (item.group, item.version, item.resource),
                {
                    "group": item.group,
                    "version": item.version,
                    "kind": item.kind,
                    "resource": item.resource,
                },
            )
            if metadata_only:
                wrap = metadata_wrapper(group_version(item.group, item.version), item.kind)
                datas.append(wrap(item.data))
            else:
                datas.append(item.data)
        head: dict[str, Any] = {
            "kind": "CollectionResource",
            "apiVersion": GROUP_VERSION,
            "metadata": {"name": name},
            "resourceTypes": list(types.values()),
        }
        if continue_token:
            head["continue"] = continue_token
        if remaining is not None:
            head["remainingItemCount"] = remaining
        prefix = orjson.dumps(head)[:-1] + b',"items":['
        return web.Response(body=page_body(prefix, datas, b"]}"), content_type="application/json")
