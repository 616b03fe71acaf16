"""Reach through to a member: a pod's ``log``, ``exec``, ``attach`` and ``portforward``, served
by the member itself, acting there **as the requesting user**.

``.../resources/clusters/<cluster>/api/v1/namespaces/<ns>/pods/<pod>/<subresource>`` goes to
the member the PediaCluster names, with its credentials and ``Impersonate-User``,
``Impersonate-Group``, ``Impersonate-Uid`` and ``Impersonate-Extra-*`` of the user we
authenticated, so the member's own RBAC decides (the PediaCluster's identity needs only
``impersonate`` there: ``manifests/member/impersonate.yaml``). We authorize the request first,
as for every path (the authorization layer before this one).

``log`` is a GET streamed back as the member sends it (``follow=true`` follows). ``exec``,
``attach`` and ``portforward`` are WebSocket sessions (what kubectl 1.30+ speaks first), relayed
message by message in both directions; closing either end closes the other. SPDY, kubectl's
fallback, is refused with a Status that says so. The member's answer to a refused request
(403, 404) is passed through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from clusterpedia.apiserver.authn import USER, User
from clusterpedia.apiserver.chain import Handler
from clusterpedia.apiserver.requestinfo import split_path
from clusterpedia.apiserver.status import StatusError
from clusterpedia.kube.access import InvalidClusterConfig, MemberAccess, access_from_spec
from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.kube.pediaclusters import authentication_secrets, host_path

logger = logging.getLogger(__name__)
PREFIX = ["apis", "clusterpedia.io", "v1beta1", "resources", "clusters"]
SUBRESOURCES = frozenset({"log", "exec", "attach", "portforward"})
SESSIONS = frozenset({"exec", "attach", "portforward"})  # WebSocket upgrades
PEDIACLUSTERS = ("apis", "cluster.clusterpedia.io", "v1alpha2", "pediaclusters")
ACCESS_SECONDS = 30.0  # a PediaCluster's access is re-read this often (rotated credentials)


@dataclass(frozen=True, slots=True)
class Target:
    cluster: str
    path: str  # the member's own path: /api/v1/namespaces/<ns>/pods/<pod>/<subresource>
    subresource: str


def reach_target(path: str) -> Target | None:
    """The member request a path of ours stands for, if it is one we reach through."""
    parts = split_path(path)
    if parts[:5] != PREFIX or len(parts) != 13:
        return None
    cluster, inner = parts[5], parts[6:]
    if inner[:2] != ["api", "v1"] or inner[2] != "namespaces" or inner[4] != "pods":
        return None
    if inner[6] not in SUBRESOURCES:
        return None
    return Target(cluster, "/" + "/".join(quote(part, safe="") for part in inner), inner[6])


def long_running(request: web.Request) -> bool:
    """A session or a followed log: no request deadline applies (the client ends it)."""
    target = reach_target(request.path)
    if target is None:
        return False
    return target.subresource in SESSIONS or request.query.get("follow") in ("true", "1")


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


class MemberDirectory:
    """Each member's access, built from its PediaCluster as the operator builds it, kept
    ``ACCESS_SECONDS``; one HTTP session per member."""

    def __init__(self, host: KubeClient, namespace: str):
        self.host = host
        self.namespace = namespace
        self._known: dict[str, tuple[float, MemberAccess, aiohttp.ClientSession]] = {}

    async def session(self, cluster: str) -> tuple[MemberAccess, aiohttp.ClientSession]:
        known = self._known.get(cluster)
        if known is not None and time.monotonic() - known[0] < ACCESS_SECONDS:
            return known[1], known[2]
        try:
            found = await self.host.get(host_path(*PEDIACLUSTERS, cluster))
        except KubeError as error:
            if error.status == 404:
                raise StatusError(404, f'cluster "{cluster}" is not a PediaCluster') from None
            raise StatusError(503, f"cannot read PediaCluster {cluster}: {error}") from None
        spec = found.get("spec") or {}
        try:
            secrets = await authentication_secrets(self.host, self.namespace, spec)
            access = access_from_spec(spec, secrets=secrets)
        except InvalidClusterConfig as error:
            raise StatusError(503, f"PediaCluster {cluster} cannot be reached: {error}") from None
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=access.ssl_context, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10),
        )
        if known is not None:
            await known[2].close()
        self._known[cluster] = (time.monotonic(), access, session)
        return access, session

    async def close(self) -> None:
        for _, _, session in self._known.values():
            await session.close()
        self._known.clear()


class ReachServer:
    """The chain layer: serves reach-through paths, delegates the rest."""

    def __init__(self, directory: MemberDirectory):
        self.directory = directory

    async def __call__(self, request: web.Request, delegate: Handler) -> web.StreamResponse:
        target = reach_target(request.path)
        if target is None:
            return await delegate(request)
        user = request.get(USER)
        if user is None:
            raise StatusError(401, "Unauthorized")
        access, session = await self.directory.session(target.cluster)
        headers = impersonation(user)
        headers.update(access.headers)
        url = access.server.rstrip("/") + target.path
        upgrade = request.headers.get("Upgrade", "").lower()
        if target.subresource in SESSIONS:
            if upgrade != "websocket":
                raise StatusError(
                    400,
                    f"{target.subresource} through Clusterpedia needs a WebSocket upgrade "
                    f"(kubectl 1.30 and later send one first); got {upgrade or 'none'}",
                )
            return await self._session(request, session, url, headers, target)
        return await self._log(request, session, url, headers)

    async def _log(
        self,
        request: web.Request,
        session: aiohttp.ClientSession,
        url: str,
        headers: CIMultiDict[str],
    ) -> web.StreamResponse:
        try:
            upstream = await session.get(url, params=request.query, headers=headers)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise StatusError(503, f"the member cannot be reached: {error}") from None
        async with upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={"Content-Type": upstream.headers.get("Content-Type", "text/plain")},
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError) as error:
                logger.info("log from the member ended: %r", error)  # the stream just ends
            await response.write_eof()
            return response

    async def _session(
        self,
        request: web.Request,
        session: aiohttp.ClientSession,
        url: str,
        headers: CIMultiDict[str],
        target: Target,
    ) -> web.StreamResponse:
        offered = [
            protocol.strip()
            for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if protocol.strip()
        ]
        try:
            member = await session.ws_connect(
                url + ("?" + request.query_string if request.query_string else ""),
                protocols=offered,
                headers=headers,
                max_msg_size=0,
                autoping=True,
                heartbeat=None,
            )
        except aiohttp.WSServerHandshakeError as error:
            raise StatusError(
                error.status if error.status >= 400 else 502,
                f"the member refused the {target.subresource} session: {error.message}",
            ) from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise StatusError(503, f"the member cannot be reached: {error}") from None
        client = web.WebSocketResponse(
            protocols=[member.protocol] if member.protocol else (), max_msg_size=0
        )
        try:
            await client.prepare(request)
            logger.info(
                "%s session to %s%s for %s",
                target.subresource,
                target.cluster,
                target.path,
                request[USER].name,
            )
            await _relay(client, member)
        finally:
            await member.close()
            await client.close()
        return client


async def _relay(client: web.WebSocketResponse, member: aiohttp.ClientWebSocketResponse) -> None:
    """Messages both ways until either side closes; then the other is closed too."""

    async def pump(source: Any, sink: Any) -> None:
        async for message in source:
            if message.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(message.data)
            else:
                break

    tasks = [
        asyncio.create_task(pump(client, member), name="reach: client -> member"),
        asyncio.create_task(pump(member, client), name="reach: member -> client"),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
