"""The Kubernetes-style API under ``/apis/clusterpedia.io/v1beta1/resources``.

``.../resources/<kube path>`` serves every cluster at once, ``.../resources/clusters/<name>/
<kube path>`` one cluster: discovery, list (with every search parameter), watch and get by
name. Lists splice stored bytes (``lists.py``); Tables parse objects (``tables.py``); watches
stream the change log (``watch.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from clusterpedia.search.params import query_from_request
from clusterpedia.storage import Catalog, ObjectReads, Query, SyncedType, TypeFilter

from . import discovery
from .chain import Handler
from .events import stream_with_events, with_events
from .lists import (
    as_partial,
    envelope,
    list_metadata,
    metadata_wrapper,
    page_body,
    stream_list,
)
from .negotiation import Form, negotiate
from .requestinfo import RequestInfo, record_of, search_values
from .scope import narrow_clusters, visible_types
from .status import StatusError, json_response, no_route, not_found
from .tables import TableBuilder, include_object
from .warning import add_warning
from .watch import WatchServer

LIST_FORMS = {Form.JSON, Form.TABLE, Form.METADATA}
DISCOVERY_FORMS = {Form.JSON, Form.DISCOVERY_V2, Form.DISCOVERY_V2BETA1}


class ResourcesServer:
    """Serves the ``resources`` prefix; delegates every other path."""

    def __init__(
        self,
        *,
        reader: ObjectReads,
        catalog: Catalog,
        version: dict[str, Any],
        watch: WatchServer | None = None,
    ):
        self.reader = reader
        self.catalog = catalog
        self.version = version
        self.watch = watch

    async def __call__(self, request: web.Request, delegate: Handler) -> web.StreamResponse:
        record = record_of(request)
        if not record.resources:
            return await delegate(request)
        cluster, inner = record.cluster, list(record.inner)
        if not inner or (cluster is None and inner[0] == "clusters"):
            raise no_route()
        types = await visible_types(request, self.catalog, cluster=cluster)
        if cluster is not None and not types:
            # a cluster synced in the last seconds is not in the catalog's cache yet
            types = await visible_types(request, self.catalog, cluster=cluster, fresh=True)
        if cluster is not None and not types:
            raise StatusError(400, "the server could not find the requested cluster")
        warning = await self._health_warning(cluster) if cluster is not None else ""
        if warning:
            add_warning(request, warning)
        return await self._serve(request, inner, types, cluster)

    async def _health_warning(self, cluster: str) -> str:
        """The original's warning when a cluster is not known to be healthy: its rows may be
        stale (sync stops while a member is unreachable; rows are kept)."""
        healthy, reason = (await self.catalog.health()).get(cluster, (False, "not probed yet"))
        if healthy:
            return ""
        text = f"{cluster} is not ready and the resources obtained may be inaccurate"
        if reason:
            text += f", reason: {reason}"
        return text

    async def _serve(
        self,
        request: web.Request,
        inner: list[str],
        types: list[SyncedType],
        cluster: str | None,
    ) -> web.StreamResponse:
        if inner == ["version"]:
            return json_response(self.version)
        info = record_of(request).inner_info
        assert info is not None  # a path under .../resources has one
        catalogue = discovery.ServedTypes(types)
        if not info.is_resource_request:
            return self._discovery(request, inner, catalogue)
        synced = catalogue.find(info.api_group, info.api_version, info.resource)
        if synced is None or info.subresource:
            raise no_route()
        # /api/v1/namespaces/<name> is a get of the namespace, not a request inside it.
        is_namespace_get = info.resource == "namespaces" and info.name == info.namespace
        namespace = "" if is_namespace_get else info.namespace
        if namespace and not synced.namespaced:
            raise no_route()
        if info.verb == "watch":
            return await self._watch(request, synced, cluster=cluster, namespace=namespace)
        if info.verb == "get":
            if cluster is None:
                raise StatusError(
                    400,
                    "please specify the cluster name when using the resource name to get a "
                    "specific resource.",
                )
            return await self._get(request, info, synced, cluster=cluster, namespace=namespace)
        return await self._list(request, synced, cluster=cluster, namespace=namespace)

    # -- discovery ----------------------------------------------------------------------------

    def _discovery(
        self, request: web.Request, inner: list[str], catalogue: discovery.ServedTypes
    ) -> web.Response:
        if inner in (["api"], ["apis"]):
            form = negotiate(request.headers.get("Accept"), allowed=DISCOVERY_FORMS)
            core = inner == ["api"]
            if form is not Form.JSON:
                return web.Response(
                    body=orjson.dumps(discovery.aggregated(catalogue, core=core, form=form)),
                    headers={
                        "Content-Type": discovery.v2_content_type(form),
                        "Vary": "Accept",
                    },
                )
            document = (
                discovery.api_versions(catalogue) if core else discovery.api_group_list(catalogue)
            )
            return json_response(document)
        groups = catalogue.groups()
        if len(inner) == 2 and inner[0] == "apis" and inner[1] in groups and inner[1]:
            return json_response(discovery.api_group(inner[1], groups[inner[1]]))
        if (len(inner) == 2 and inner[0] == "api") or (len(inner) == 3 and inner[0] == "apis"):
            group, version = ("", inner[1]) if inner[0] == "api" else (inner[1], inner[2])
            found = catalogue.resources(group, version)
            if found:
                return json_response(discovery.api_resource_list(group, version, found))
        raise no_route()

    # -- get ----------------------------------------------------------------------------------

    async def _get(
        self,
        request: web.Request,
        info: RequestInfo,
        synced: SyncedType,
        *,
        cluster: str,
        namespace: str,
    ) -> web.Response:
        form = negotiate(request.headers.get("Accept"), allowed=LIST_FORMS)
        data = await self.reader.get(
            cluster=cluster,
            group=synced.group,
            version=synced.version,
            resource=synced.resource,
            namespace=namespace,
            name=info.name,
        )
        if data is None:
            raise not_found(synced.resource, info.name, group=synced.group)
        if form is Form.JSON:
            return web.Response(body=data, content_type="application/json")
        if form is Form.METADATA:
            metadata = orjson.loads(data).get("metadata") or {}
            return json_response(
                {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                }
            )
        builder = self._table_builder(request, synced)
        return json_response(builder.table([(data, cluster)], list_metadata=list_metadata()))

    # -- list ---------------------------------------------------------------------------------

    def _query(
        self,
        request: web.Request,
        synced: SyncedType,
        form: Form,
        *,
        cluster: str | None,
        namespace: str,
    ) -> tuple[Query, tuple[str, ...] | None]:
        """The request's query, and the clusters it may see (None: none at all)."""
        query = query_from_request(
            search_values(request),
            types=(TypeFilter(synced.group, synced.version, synced.resource),),
            cluster=cluster,
            namespace=namespace or None,
        )
        clusters = narrow_clusters(request, query.clusters)
        query = replace(
            query,
            clusters=clusters or (),
            metadata_only=form is Form.METADATA or query.metadata_only,
        )
        return query, clusters

    async def _watch(
        self, request: web.Request, synced: SyncedType, *, cluster: str | None, namespace: str
    ) -> web.StreamResponse:
        if self.watch is None:
            raise StatusError(405, "watch is not enabled on this server")
        form = negotiate(request.headers.get("Accept"), allowed=LIST_FORMS)
        query, clusters = self._query(request, synced, form, cluster=cluster, namespace=namespace)
        if query.inject_events:
            raise StatusError(400, "injectEvents applies to lists, not to watches")
        if clusters is None:  # may see no cluster: no name matches "", so no event passes
            query = replace(query, clusters=("",))
        table = self._table_builder(request, synced) if form is Form.TABLE else None
        return await self.watch.serve(request, query=query, synced=synced, form=form, table=table)

    async def _list(
        self, request: web.Request, synced: SyncedType, *, cluster: str | None, namespace: str
    ) -> web.StreamResponse:
        form = negotiate(request.headers.get("Accept"), allowed=LIST_FORMS)
        query, clusters = self._query(request, synced, form, cluster=cluster, namespace=namespace)
        if query.inject_events and (form is not Form.JSON or query.metadata_only):
            raise StatusError(400, "injectEvents applies to lists of whole objects (JSON)")
        if form is Form.TABLE:
            builder = self._table_builder(request, synced)
            if clusters is None:
                head_rv = str(await self.reader.head())
                return json_response(
                    builder.table([], list_metadata=list_metadata(resource_version=head_rv))
                )
            page = await self.reader.list(query)
            return json_response(
                builder.table(
                    [(item.data, item.cluster) for item in page.items],
                    list_metadata=list_metadata(
                        continue_token=page.continue_token,
                        remaining=page.remaining_count,
                        resource_version=str(page.resource_version),
                    ),
                )
            )
        if form is Form.METADATA:
            kind, api_version, wrap = "PartialObjectMetadataList", "meta.k8s.io/v1", as_partial
        elif query.metadata_only:  # onlyMetadata=true, the original's search parameter
            kind, api_version = f"{synced.kind}List", synced.rtype.api_version
            wrap = metadata_wrapper(api_version, synced.kind)
        else:
            kind, api_version, wrap = f"{synced.kind}List", synced.rtype.api_version, None
        if clusters is None:
            head_rv = str(await self.reader.head())
            head, tail = envelope(kind, api_version, list_metadata(resource_version=head_rv))
            return web.Response(body=head + tail, content_type="application/json")
        if query.limit is None and query.offset is None and not query.continue_token:
            head_rv = str(await self.reader.head())  # before the rows: see ObjectReads.list
            head, tail = envelope(kind, api_version, list_metadata(resource_version=head_rv))
            items = self.reader.stream(query)
            if wrap is not None:
                items = _mapped(items, wrap)
            if query.inject_events:
                items = stream_with_events(self.reader, items)
            return await stream_list(request, head, items, tail)
        page = await self.reader.list(query)
        head, tail = envelope(
            kind,
            api_version,
            list_metadata(
                continue_token=page.continue_token,
                remaining=page.remaining_count,
                resource_version=str(page.resource_version),
            ),
        )
        datas = [item.data for item in page.items]
        if wrap is not None:
            datas = [wrap(d) for d in datas]
        if query.inject_events:
            datas = await with_events(self.reader, datas)
        return web.Response(body=page_body(head, datas, tail), content_type="application/json")

    def _table_builder(self, request: web.Request, synced: SyncedType) -> TableBuilder:
        return TableBuilder(
            synced,
            group=synced.group,
            resource=synced.resource,
            include=include_object(request.query.get("includeObject")),
        )


async def _mapped(
    items: AsyncIterator[bytes], wrap: Callable[[bytes], bytes]
) -> AsyncIterator[bytes]:
    async for data in items:
        yield wrap(data)
