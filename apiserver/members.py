"""Who we are on a member when a request reaches through to it, and how we get there.

:class:`MemberDirectory` builds each member's access from its PediaCluster as the operator
builds it (``kube/pediaclusters.py``), one HTTP session per member. :class:`Identity` says whose
rights a request uses there: by default **the requesting user's** (``Impersonate-User``,
``-Group``, ``-Uid``, ``-Extra-*``), so the member's own RBAC decides and the PediaCluster's
identity needs only ``impersonate`` (``manifests/member/impersonate.yaml``); or, only when the
operator of Clusterpedia asks for it, the PediaCluster's own rights, as the original does.

Only the request headers a member needs pass on (``forwarded_headers``): never the client's
own ``Authorization`` or ``Impersonate-*``, which would let a client choose its identity there.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from clusterpedia.apiserver.authn import User
from clusterpedia.apiserver.status import StatusError
from clusterpedia.kube.access import InvalidClusterConfig, MemberAccess, access_from_spec
from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.kube.pediaclusters import authentication_secrets, host_path

logger = logging.getLogger(__name__)
PEDIACLUSTERS = ("apis", "cluster.clusterpedia.io", "v1alpha2", "pediaclusters")
ACCESS_SECONDS = 30.0  # a PediaCluster's access is re-read this often (rotated credentials)
# What a client's request carries on to the member: what it asks for and in which form.
FORWARDED_REQUEST_HEADERS = (
    "Accept",
    "Accept-Encoding",
    "Content-Type",
    "Content-Encoding",
    "User-Agent",
    "If-None-Match",
    "If-Match",
    "X-Stream-Protocol-Version",
)
# The original's per-request member credentials: refused, we act as the requesting user.
CREDENTIAL_HEADERS = (
    "X-Clusterpedia-Proxy-Token",
    "X-Clusterpedia-Proxy-Ca",
    "X-Clusterpedia-Proxy-Client-Cert",
    "X-Clusterpedia-Proxy-Client-Key",
)


def impersonation(user: User) -> CIMultiDict[str]:
    """The headers that make the member act as ``user`` (one header per group and value)."""
    headers: CIMultiDict[str] = CIMultiDict({"Impersonate-User": user.name})
    if user.uid:
        headers["Impersonate-Uid"] = user.uid
    for group in user.groups:
        headers.add("Impersonate-Group", group)
    for key, values in user.extra.items():
        for value in values:
            headers.add(f"Impersonate-Extra-{quote(key, safe='')}", value)
    return headers


class Identity:
    """Whose rights a request reaching a member uses there."""

    def __init__(self, *, as_pediacluster: bool = False):
        self.as_pediacluster = as_pediacluster

    def headers(self, user: User, access: MemberAccess) -> CIMultiDict[str]:
        headers = CIMultiDict[str]() if self.as_pediacluster else impersonation(user)
        headers.update(access.headers)
        return headers

    def warn(self) -> None:
        if self.as_pediacluster:
            logger.warning(
                "--allow-pediacluster-config-for-proxy-request: requests reaching members act "
                "there with each PediaCluster's own credentials, not as the requesting user; "
                "anyone who may read through Clusterpedia may use those rights (exec into every "
                "pod the PediaCluster's identity may exec into)"
            )


def forwarded_headers(request: web.Request) -> CIMultiDict[str]:
    """The client's headers a member is sent; the member's credentials are added to them."""
    for name in CREDENTIAL_HEADERS:
        if name in request.headers:
            raise StatusError(
                400,
                f"{name} is not accepted: requests reach members as the requesting user "
                "(impersonation), never with credentials a client sends",
            )
    return CIMultiDict(
        (name, value)
        for name in FORWARDED_REQUEST_HEADERS
        for value in request.headers.getall(name, ())
    )


@dataclass(eq=False)
class Member:
    """One member's access and HTTP session; closed once replaced and no request uses it."""

    access: MemberAccess
    http: aiohttp.ClientSession
    fingerprint: bytes
    read_at: float
    users: int = 0
    retired: bool = False

    async def release(self) -> None:
        self.users -= 1
        if self.retired and self.users == 0:
            await self.http.close()


class MemberDirectory:
    """Each member's access, built from its PediaCluster as the operator builds it and
    re-read after ``ACCESS_SECONDS`` (rotated credentials); one HTTP session per member. A
    session that a changed PediaCluster replaces stays open for the requests using it (an exec
    session may last hours) and closes after the last."""

    def __init__(self, host: KubeClient, namespace: str):
        self.host = host
        self.namespace = namespace
        self._known: dict[str, Member] = {}

    @contextlib.asynccontextmanager
    async def use(self, cluster: str) -> AsyncIterator[Member]:
        member = await self._current(cluster)
        member.users += 1
        try:
            yield member
        finally:
            await member.release()

    async def _current(self, cluster: str) -> Member:
        known = self._known.get(cluster)
        if known is not None and time.monotonic() - known.read_at < ACCESS_SECONDS:
            return known
        try:
            found = await self.host.get(host_path(*PEDIACLUSTERS, cluster))
        except KubeError as error:
            if error.status == 404:
                raise StatusError(404, f'cluster "{cluster}" is not a PediaCluster') from None
            raise StatusError(503, f"cannot read PediaCluster {cluster}: {error}") from None
        spec = found.get("spec") or {}
        try:
            secrets = await authentication_secrets(self.host, self.namespace, spec)
            fingerprint = orjson.dumps(
                [spec, {purpose: value.hex() for purpose, value in secrets.items()}],
                option=orjson.OPT_SORT_KEYS,
            )
            if known is not None and known.fingerprint == fingerprint:
                known.read_at = time.monotonic()
                return known
            access = access_from_spec(spec, secrets=secrets)
        except InvalidClusterConfig as error:
            raise StatusError(503, f"PediaCluster {cluster} cannot be reached: {error}") from None
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=access.ssl_context, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10),
            auto_decompress=False,  # bytes pass through as the member encoded them
        )
        if known is not None:
            known.retired = True
            known.users += 1
            await known.release()  # closes it now if nothing uses it
        member = Member(access, http, fingerprint, time.monotonic())
        self._known[cluster] = member
        return member

    async def close(self) -> None:
        for member in self._known.values():
            await member.http.close()
        self._known.clear()
