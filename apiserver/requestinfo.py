"""What a request asks for, parsed as Kubernetes' RequestInfoFactory parses a path.

Used twice: on the whole path, for authorization (the attributes kube-apiserver itself derived
before it proxied the request), and on the path inside the ``resources`` prefix, for routing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

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


REQUEST_INFO = web.RequestKey("request_info", RequestInfo)


def request_info(request: web.Request) -> RequestInfo:
    return request[REQUEST_INFO]


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
