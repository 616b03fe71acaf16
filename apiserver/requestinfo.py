"""What a request asks for, worked out once at the top of the handler chain.

:class:`RequestInfo` is the path parsed as Kubernetes' RequestInfoFactory parses it: on the
whole path, for authorization (the attributes kube-apiserver itself derived before it proxied
the request), and on the path inside the ``resources`` prefix, for routing.

:class:`RequestRecord` is everything every later layer asks of a request, resolved once by
:func:`resolve_request` (as kube-apiserver resolves the RequestInfo once and hands one
LongRunningFunc to its in-flight and timeout filters): the path's segments, the cluster and
member path under ``.../resources``, whether it is long-running, a health probe, or asks to be
forwarded to its member. No filter works any of it out again, nor imports a server for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from clusterpedia.search.params import forward_requested

RESOURCES_PREFIX = ("apis", "clusterpedia.io", "v1beta1", "resources")
HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
# What may reach a member at all, as the original: (resource, subresource) of core/v1.
MEMBER_SUBRESOURCES = frozenset(
    {
        ("pods", "proxy"),
        ("pods", "log"),
        ("pods", "exec"),
        ("pods", "attach"),
        ("pods", "portforward"),
        ("nodes", "proxy"),
        ("services", "proxy"),
    }
)
SESSIONS = frozenset({"exec", "attach", "portforward"})  # WebSocket upgrades

_API_PREFIXES = {"api", "apis"}
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
_READ_METHODS = {"GET": "get", "HEAD": "get"}


@dataclass(frozen=True, slots=True)
class RequestInfo:
    path: str
    verb: str  # get/list/watch for resources; the lower-cased HTTP method otherwise
    is_resource_request: bool
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    name: str = ""
    subresource: str = ""


def split_path(path: str) -> list[str]:
    return [part for part in path.strip("/").split("/") if part]


def _is_true(value: str | None) -> bool:
    return value in ("true", "1")


def parse_request(path: str, method: str, query: Mapping[str, str] | None = None) -> RequestInfo:
    """The Kubernetes request attributes of ``method path?query``."""
    query = query or {}
    parts = split_path(path)
    method = method.upper()
    non_resource = RequestInfo(path=path, verb=method.lower(), is_resource_request=False)
    if not parts or parts[0] not in _API_PREFIXES:
        return non_resource
    prefix = parts[0]
    if prefix == "api":
        if len(parts) < 2:
            return non_resource
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 3:
            return non_resource
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return RequestInfo(
            path=path,
            verb=method.lower(),
            is_resource_request=False,
            api_group=group,
            api_version=version,
        )
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if method in _READ_METHODS:
        if name:
            verb = "get"
        elif _is_true(query.get("watch")):
            verb = "watch"
        else:
            verb = "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            method, method.lower()
        )
    if verb in ("list", "watch") and query.get("fieldSelector", "").startswith("metadata.name="):
        selector = query["fieldSelector"]
        if "," not in selector:
            name = selector.removeprefix("metadata.name=")
    return RequestInfo(
        path=path,
        verb=verb,
        is_resource_request=True,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        name=name,
        subresource=subresource,
    )


def subresource_of(inner: Sequence[str]) -> tuple[str, str] | None:
    """(resource, subresource) when ``inner``, a member path, names one of an object of
    core/v1 that may reach a member (``proxy`` takes a path after it)."""
    if list(inner[:2]) != ["api", "v1"]:
        return None
    rest = inner[2:]
    if len(rest) >= 5 and rest[0] == "namespaces" and rest[2] in ("pods", "services"):
        found, extra = (rest[2], rest[4]), rest[5:]
    elif len(rest) >= 3 and rest[0] == "nodes":
        found, extra = ("nodes", rest[2]), rest[3:]
    else:
        return None
    if found not in MEMBER_SUBRESOURCES or (extra and found[1] != "proxy"):
        return None
    return found


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """A request as every layer of the chain reads it, resolved once."""

    info: RequestInfo  # the whole path's Kubernetes attributes (authorization)
    parts: tuple[str, ...]  # the path's segments
    resources: bool  # under .../clusterpedia.io/v1beta1/resources
    cluster: str | None  # of .../resources/clusters/<cluster>/...
    inner: tuple[str, ...]  # the path under .../resources (and the cluster), a member's path
    inner_info: RequestInfo | None  # ``inner`` parsed (None outside .../resources)
    long_running: bool  # a watch, a followed log or a member session: no deadline, watch slots
    health: bool  # /healthz, /livez, /readyz: never refused, never authorized
    forward: bool  # asks to be answered by its member (parameter, label or header)


def _member_session(inner: Sequence[str], query: Mapping[str, str]) -> bool:
    """A session or a followed log reaching a member (under ``proxy/`` too)."""
    member_path = inner[1:] if inner[:1] == ("proxy",) else inner
    subresource = subresource_of(member_path)
    if subresource is None:
        return False
    return subresource[1] in SESSIONS or (subresource[1] == "log" and _is_true(query.get("follow")))


def resolve_request(request: web.Request) -> RequestRecord:
    """Everything later layers ask of ``request`` (its path already the one it stands for)."""
    query = first_values(request)
    parts = tuple(split_path(request.path))
    resources = parts[:4] == RESOURCES_PREFIX
    cluster, inner = None, parts[4:] if resources else ()
    if resources and inner[:1] == ("clusters",) and len(inner) >= 2:
        cluster, inner = inner[1], inner[2:]
    return RequestRecord(
        info=parse_request(request.path, request.method, query),
        parts=parts,
        resources=resources,
        cluster=cluster,
        inner=inner,
        inner_info=parse_request("/" + "/".join(inner), request.method, query)
        if resources and inner
        else None,
        long_running=_is_true(query.get("watch")) or (resources and _member_session(inner, query)),
        health=(request.path.rstrip("/") or "/") in HEALTH_PATHS,
        # only a path under .../resources can be forwarded (and only there is the marker read)
        forward=resources and forward_requested(search_values(request)),
    )


RECORD = web.RequestKey("record", RequestRecord)


def record_of(request: web.Request) -> RequestRecord:
    return request[RECORD]


def request_info(request: web.Request) -> RequestInfo:
    return request[RECORD].info


def first_values(request: web.Request) -> dict[str, str]:
    return {key: request.query.get(key, "") for key in request.query}


def all_values(request: web.Request) -> dict[str, Sequence[str]]:
    return {key: request.query.getall(key) for key in set(request.query.keys())}


def search_values(request: web.Request) -> dict[str, Sequence[str]]:
    """The query, and the original's ``X-Clusterpedia-Forward`` header as the ``forward``
    search parameter it stands for."""
    values = all_values(request)
    forward = request.headers.get("X-Clusterpedia-Forward")
    if forward is not None and forward.lower() == "true":
        values["forward"] = [forward]
    return values
