"""Reach through to a member: what the database cannot answer, the member itself answers.

Under ``.../resources/clusters/<cluster>/``, four kinds of request go on to the member the
PediaCluster names (``members.py`` says as whom: by default the requesting user):

- **subresources** the policy allows (``--allowed-proxy-subresources``, the original's syntax
  ``[resource/]subresource,...``): pods' ``log``, ``exec``, ``attach``, ``portforward`` by
  default, and on request pods', nodes' and services' ``proxy``. ``exec``, ``attach`` and
  ``portforward`` are WebSocket sessions (what kubectl 1.30+ sends first); SPDY, kubectl's
  fallback, is refused with a Status that says so;
- **forwarded** requests: the ``forward`` parameter, the ``search.clusterpedia.io/forward``
  label or the ``X-Clusterpedia-Forward: true`` header send a read to the member as it is;
- **unsynced** types (``--allow-forward-unsync-resource-request``): a read of a type this
  cluster does not sync goes to the member; so does the cluster's discovery, so kubectl finds
  those types (our own discovery answers, with a warning, while the member is unreachable);
- **the proxy path** (``--enable-proxy-path-for-forward-request``): ``.../clusters/<c>/proxy/
  <any member path>``, every method.

Every one was authorized by us first, as kube-apiserver would authorize its path (the
authorization layer runs before this one), and then by the member. Search parameters mean
nothing to a member, so a request sent on with one is refused, never answered as if it had
none. A member path is built from the request's own segments, and one that would climb out of
them (dot segments, encoded slashes) is refused. This layer runs before the read-only guard:
the subresources and the proxy path may write (an exec, a POST through ``proxy``); everything
else here is a read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlencode

from aiohttp import web

from clusterpedia.search.params import forwarded_query
from clusterpedia.storage import Catalog

from .authn import USER
from .chain import Handler
from .discovery import ServedTypes
from .members import Identity, MemberDirectory, forwarded_headers
from .relay import MemberUnreachable, relay_http, relay_websocket
from .requestinfo import (
    MEMBER_SUBRESOURCES,
    RESOURCES_PREFIX,
    SESSIONS,
    all_values,
    record_of,
    subresource_of,
)
from .scope import visible_types
from .status import StatusError
from .warning import add_warning

logger = logging.getLogger(__name__)
DEFAULT_SUBRESOURCES = "pods/log,pods/exec,pods/attach,pods/portforward"
READS = frozenset({"GET", "HEAD"})


def parse_allowed_subresources(text: str) -> frozenset[tuple[str, str]]:
    """``[resource/]subresource,...`` (a bare subresource: every resource that has it);
    raises ValueError naming the item it cannot use."""
    allowed: set[tuple[str, str]] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        resource, _, subresource = item.rpartition("/")
        matched = {
            pair
            for pair in MEMBER_SUBRESOURCES
            if pair[1] == subresource and resource in ("", pair[0]) and "/" not in resource
        }
        if not matched:
            supported = ",".join(sorted(f"{r}/{s}" for r, s in MEMBER_SUBRESOURCES))
            raise ValueError(
                f"--allowed-proxy-subresources: {item!r} is not a supported subresource "
                f"(supported: {supported})"
            )
        allowed |= matched
    return frozenset(allowed)


@dataclass(frozen=True)
class ReachPolicy:
    """What may reach members; the flags of the same names."""

    subresources: frozenset[tuple[str, str]] = field(
        default_factory=lambda: parse_allowed_subresources(DEFAULT_SUBRESOURCES)
    )
    forward_unsynced: bool = False  # --allow-forward-unsync-resource-request
    proxy_path: bool = False  # --enable-proxy-path-for-forward-request


@dataclass(frozen=True, slots=True)
class MemberRequest:
    cluster: str
    path: str  # the member's own path, segments quoted
    kind: str  # what it is, for logs and metrics: log, exec, ..., forward, unsynced, proxy-path
    query: str  # encoded
    websocket: bool = False
    discovery: bool = False  # ours answers if the member cannot be reached


def refuse_climbing(raw_path: str) -> None:
    """400 for a path that would not mean the same on the member: a dot segment (``.`` or
    ``..``, raw or percent-encoded) after the cluster, which a URL library resolves into another
    path, or an encoded ``/`` anywhere, which would split a segment in two. A member path is
    built from these segments, so it must be exactly them."""
    segments = [part for part in raw_path.strip("/").split("/") if part]
    for index, segment in enumerate(segments):
        decoded = unquote(segment)
        if "/" in decoded:
            raise StatusError(400, "a path that reaches a member may not hold an encoded '/'")
        if index > len(RESOURCES_PREFIX) + 1 and decoded in (".", ".."):
            raise StatusError(
                400, f"a path that reaches a member may not hold the segment {decoded!r}"
            )


def _member_path(inner: list[str], trailing_slash: bool) -> str:
    path = "/" + "/".join(quote(part, safe="") for part in inner)
    return path + "/" if trailing_slash and inner else path


class ReachServer:
    """The chain layer: serves what reaches members, delegates the rest."""

    def __init__(
        self,
        directory: MemberDirectory,
        *,
        catalog: Catalog,
        policy: ReachPolicy | None = None,
        identity: Identity | None = None,
    ):
        self.directory = directory
        self.catalog = catalog
        self.policy = policy or ReachPolicy()
        self.identity = identity or Identity()

    async def __call__(self, request: web.Request, delegate: Handler) -> web.StreamResponse:
        record = record_of(request)
        if not record.resources:
            return await delegate(request)
        if record.cluster is None or not record.inner:
            if record.forward:
                raise StatusError(
                    400,
                    "forwarding a request to a member needs the member: "
                    ".../resources/clusters/<cluster>/...",
                )
            return await delegate(request)
        refuse_climbing(request.rel_url.raw_path)
        target = await self._target(
            request, record.cluster, list(record.inner), forward=record.forward
        )
        if target is None:
            return await delegate(request)
        try:
            return await self._reach(request, target)
        except MemberUnreachable as error:
            if not target.discovery:
                raise
            add_warning(
                request,
                f"{target.cluster} cannot be reached, only its synced types are listed: "
                f"{error.message[:200]}",
            )
            return await delegate(request)

    async def _target(
        self, request: web.Request, cluster: str, inner: list[str], *, forward: bool
    ) -> MemberRequest | None:
        trailing = request.path.endswith("/")
        raw_query = request.rel_url.raw_query_string
        if inner[0] == "proxy":
            if not self.policy.proxy_path:
                raise StatusError(
                    404,
                    "the proxy path to members is not enabled on this server "
                    "(--enable-proxy-path-for-forward-request)",
                )
            return MemberRequest(
                cluster,
                _member_path(inner[1:], trailing),
                "proxy-path",
                raw_query,
                websocket=_upgrade(request) == "websocket",
            )
        subresource = subresource_of(inner)
        if subresource is not None:
            return self._subresource(request, cluster, inner, subresource, trailing)
        if not (forward or self.policy.forward_unsynced) or inner[0] not in ("api", "apis"):
            return None
        info = record_of(request).inner_info
        assert info is not None  # a path under .../clusters/<cluster>/ has one
        unsynced = False
        if info.is_resource_request:
            types = await visible_types(request, self.catalog, cluster=cluster)
            found = ServedTypes(types).find(info.api_group, info.api_version, info.resource)
            unsynced = found is None or bool(info.subresource)
        if forward and unsynced and not self.policy.forward_unsynced:
            raise StatusError(
                403,
                f"{info.resource} is not synced from {cluster}, and forwarding a type that is "
                "not synced is not enabled on this server "
                "(--allow-forward-unsync-resource-request)",
            )
        if not (forward or unsynced or not info.is_resource_request):
            return None
        if request.method not in READS:
            raise StatusError(
                405, f"a request forwarded to a member is a read; got {request.method}"
            )
        query = urlencode(forwarded_query(all_values(request)))
        kind = "forward" if forward else "unsynced"
        return MemberRequest(
            cluster,
            _member_path(inner, trailing),
            kind,
            query,
            discovery=not forward and not info.is_resource_request,
        )

    def _subresource(
        self,
        request: web.Request,
        cluster: str,
        inner: list[str],
        subresource: tuple[str, str],
        trailing: bool,
    ) -> MemberRequest:
        resource, name = subresource
        if subresource not in self.policy.subresources:
            allowed = ",".join(sorted(f"{r}/{s}" for r, s in self.policy.subresources))
            raise StatusError(
                403,
                f"{resource}/{name} does not reach members from this server "
                f"(--allowed-proxy-subresources={allowed or '<none>'})",
            )
        kind = name if resource == "pods" else f"{resource}/{name}"
        upgrade = _upgrade(request)
        if name in SESSIONS and upgrade != "websocket":
            raise StatusError(
                400,
                f"{name} through Clusterpedia needs a WebSocket upgrade "
                f"(kubectl 1.30 and later send one first); got {upgrade or 'none'}",
            )
        if name == "log" and request.method not in READS:
            raise StatusError(405, f"pods/log is read with GET; got {request.method}")
        return MemberRequest(
            cluster,
            _member_path(inner, trailing),
            kind,
            request.rel_url.raw_query_string,
            websocket=upgrade == "websocket",
        )

    async def _reach(self, request: web.Request, target: MemberRequest) -> web.StreamResponse:
        user = request.get(USER)
        if user is None:
            raise StatusError(401, "Unauthorized")
        headers = forwarded_headers(request)
        async with self.directory.use(target.cluster) as member:
            headers.extend(self.identity.headers(user, member.access))
            url = member.access.server.rstrip("/") + target.path
            if target.query:
                url += "?" + target.query
            if target.websocket:
                logger.info(
                    "%s session to %s%s for %s", target.kind, target.cluster, target.path, user.name
                )
                return await relay_websocket(
                    request, member.http, url, headers, kind=target.kind,
                    response_timeout=self.directory.response_timeout,
                )  # fmt: skip
            if request.method not in READS:
                logger.info(
                    "%s %s%s for %s", request.method, target.cluster, target.path, user.name
                )
            return await relay_http(
                request, member.http, url, headers, kind=target.kind,
                response_timeout=self.directory.response_timeout,
            )  # fmt: skip


def _upgrade(request: web.Request) -> str:
    return request.headers.get("Upgrade", "").lower()
