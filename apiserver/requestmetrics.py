"""kube-apiserver's request metrics, with its names, labels and buckets, so the SLO dashboards
and burn-rate alerts written against every API server work on this one unchanged.

The filter reads the request as ``with_request_info`` resolved it (``RequestRecord``): the
labels are worked out once, from the member path under ``.../resources`` when there is one (a
list of pods through Clusterpedia counts as ``LIST`` of ``pods`` in group ``""``, ``v1``).
Cardinality stays bounded: no label holds an object name, a user or a query, and a resource is
named only if some cluster syncs it (the catalog) or it is one that reaches members (pods,
nodes, services): a path a client made up, answered 401, 403 or 404, carries no group, version,
resource or subresource.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from clusterpedia.storage import Catalog

from .chain import Handler
from .requestinfo import (
    HEALTH_PATHS,
    MEMBER_SUBRESOURCES,
    SESSIONS,
    RequestInfo,
    RequestRecord,
    record_of,
)

# kube-apiserver's own buckets (component-base: apiserver_request_duration_seconds, and
# apiserver_response_sizes as ExponentialBuckets(1000, 10, 7)).
DURATION_BUCKETS = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
)  # fmt: skip
SIZE_BUCKETS = tuple(1000.0 * 10**power for power in range(7))
TARGET = ("verb", "group", "version", "resource", "subresource", "scope", "component")
REQUESTS = Counter(
    "apiserver_request_total",
    "Counter of apiserver requests broken out for each verb, dry run value, group, version, "
    "resource, scope, component, and HTTP response code.",
    ["verb", "dry_run", "group", "version", "resource", "subresource", "scope", "component",
     "code"],
)  # fmt: skip
DURATION = Histogram(
    "apiserver_request_duration_seconds",
    "Response latency distribution in seconds for each verb, dry run value, group, version, "
    "resource, subresource, scope and component.",
    ["verb", "dry_run", "group", "version", "resource", "subresource", "scope", "component"],
    buckets=DURATION_BUCKETS,
)
SIZES = Histogram(
    "apiserver_response_sizes",
    "Response size distribution in bytes for each group, version, verb, resource, "
    "subresource, scope and component.",
    list(TARGET),
    buckets=SIZE_BUCKETS,
)
INFLIGHT = Gauge(
    "apiserver_current_inflight_requests",
    "Maximal number of currently used inflight request limit of this apiserver per request "
    "kind in last second.",
    ["request_kind"],
)
LONGRUNNING = Gauge(
    "apiserver_longrunning_requests",
    "Gauge of all active long-running apiserver requests broken out by verb, group, version, "
    "resource, scope and component. Not all requests are tracked this way.",
    list(TARGET),
)
TERMINATIONS = Counter(
    "apiserver_request_terminations_total",
    "Number of requests which apiserver terminated in self-defense.",
    [*TARGET, "code"],
)
WATCH_EVENTS = Counter(
    "apiserver_watch_events_total",
    "Number of events sent in watch clients",
    ["group", "version", "resource"],
)
# Set by admission (429) and the request deadline (504): the server ended the request itself.
TERMINATED = web.RequestKey("terminated", bool)
# Non-resource paths that keep their path as a label; any other is "" (a client's made-up
# path must not become a series).
KNOWN_PATHS = HEALTH_PATHS | {"/version", "/metrics", "/api", "/apis", "/openapi/v2"}
_VERBS = {
    "get": "GET", "list": "LIST", "watch": "WATCH", "create": "POST", "update": "PUT",
    "patch": "PATCH", "delete": "DELETE", "deletecollection": "DELETE",
}  # fmt: skip
CONNECT_SUBRESOURCES = SESSIONS | {"proxy"}


def target_labels(record: RequestRecord, method: str) -> tuple[str, ...]:
    """(verb, group, version, resource, subresource, scope, component) as kube-apiserver labels
    a request: the member's resource under ``.../resources``, the path's own otherwise."""
    inner = record.inner_info
    info: RequestInfo = inner if inner is not None and inner.is_resource_request else record.info
    if not info.is_resource_request:
        path = "/" + "/".join(record.parts)
        return (method, "", "", "", path if path in KNOWN_PATHS else "", "", "apiserver")
    verb = _VERBS.get(info.verb, method)
    if info.subresource in CONNECT_SUBRESOURCES:
        verb = "CONNECT"
    if info.name:
        scope = "resource"
    elif info.namespace:
        scope = "namespace"
    else:
        scope = "cluster"
    return (
        verb, info.api_group, info.api_version, info.resource, info.subresource, scope,
        "apiserver",
    )  # fmt: skip


ANONYMOUS_TARGET = ("", "", "", "", "")  # group, version, resource, subresource, scope
MEMBER_RESOURCES = frozenset(("", "v1", resource) for resource, _ in MEMBER_SUBRESOURCES)


class KnownResources:
    """The (group, version, resource) triples a label may name: what the catalog holds (read
    at most once a second) and what reaches members."""

    def __init__(self, catalog: Catalog, *, refresh_seconds: float = 1.0):
        self.catalog = catalog
        self.refresh_seconds = refresh_seconds
        self._known: frozenset[tuple[str, str, str]] = MEMBER_RESOURCES
        self._read_at = 0.0

    async def named(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        """``labels`` as they are if they name a known resource; else without it."""
        if not labels[3]:
            return labels
        if time.monotonic() - self._read_at > self.refresh_seconds:
            self._read_at = time.monotonic()
            try:
                types = await self.catalog.all()
            except Exception:  # a metric must never fail a request; keep the last set
                types = None
            if types is not None:
                self._known = MEMBER_RESOURCES | {(t.group, t.version, t.resource) for t in types}
        if (labels[1], labels[2], labels[3]) in self._known:
            return labels
        return (labels[0], *ANONYMOUS_TARGET, labels[6])


def _size(response: web.StreamResponse) -> int:
    if response.prepared:
        return response.body_length
    body: Any = getattr(response, "body", None)
    return len(body) if isinstance(body, bytes) else 0


def request_metrics(catalog: Catalog) -> Any:
    """The filter: counts, times and sizes every request; tracks those in flight."""
    known = KnownResources(catalog)

    async def measure(request: web.Request, delegate: Handler) -> web.StreamResponse:
        labels = await known.named(target_labels(record_of(request), request.method))
        return await _measured(request, delegate, labels)

    return measure


async def _measured(
    request: web.Request, delegate: Handler, labels: tuple[str, ...]
) -> web.StreamResponse:
    record = record_of(request)
    started = time.monotonic()
    if record.long_running:
        tracked = LONGRUNNING.labels(*labels)
    else:
        kind = "readOnly" if request.method in ("GET", "HEAD", "OPTIONS") else "mutating"
        tracked = INFLIGHT.labels(kind)
    tracked.inc()
    code = "0"  # the connection went before an answer: nothing was sent
    response: web.StreamResponse | None = None
    try:
        response = await delegate(request)
        code = str(response.status)
        return response
    finally:
        tracked.dec()
        verb, group, version, resource, subresource, scope, component = labels
        REQUESTS.labels(
            verb, "", group, version, resource, subresource, scope, component, code
        ).inc()
        DURATION.labels(verb, "", group, version, resource, subresource, scope, component).observe(
            time.monotonic() - started
        )
        if response is not None:
            SIZES.labels(*labels).observe(_size(response))
        if request.get(TERMINATED):
            TERMINATIONS.labels(*labels, code).inc()


def watch_events_sent(group: str, version: str, resource: str, count: int) -> None:
    WATCH_EVENTS.labels(group, version, resource).inc(count)
