"""Moving a request to a member and its answer back, bytes untouched.

:func:`relay_http` sends any method, streams the client's body up and the member's answer down
as it arrives (a followed log, a watch). :func:`relay_websocket` joins a client's WebSocket to
the member's, message by message both ways; closing either end closes the other. Both count
what they hold open (``clusterpedia_reach_open``), so a leak shows in ``/metrics``.

A member that cannot be reached, or does not start answering in time, before anything was sent
is :class:`MemberUnreachable` (503); once the answer has started, a failure just ends it (the
client sees the stream end). URLs go out as built (``encoded=True``): nothing resolves dot
segments on the way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import Counter, Gauge
from yarl import URL

from .status import StatusError

logger = logging.getLogger(__name__)
OPEN = Gauge(
    "clusterpedia_reach_open",
    "Requests and sessions reaching through to members, open now.",
    ["kind"],
)
TOTAL = Counter(
    "clusterpedia_reach_total",
    "Requests and sessions that reached through to members, by kind and outcome.",
    ["kind", "outcome"],
)
# Hop-by-hop and framing headers: each side of the relay has its own.
_NOT_RELAYED = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "upgrade",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "date",
        "server",
    }
)


class MemberUnreachable(StatusError):
    def __init__(self, error: BaseException | str):
        super().__init__(503, f"the member cannot be reached: {error}")


@contextlib.asynccontextmanager
async def answer_started(seconds: float) -> AsyncIterator[None]:
    """Bounds the wait for a member's answer to begin (its headers, or the WebSocket
    handshake): a member that accepts and never answers is 503, not a client left waiting."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise MemberUnreachable(f"it did not start answering within {seconds:g}s") from None


@contextlib.contextmanager
def counted(kind: str) -> Any:
    OPEN.labels(kind).inc()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        OPEN.labels(kind).dec()
        TOTAL.labels(kind, outcome).inc()


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_any():
        yield chunk


async def relay_http(
    request: web.Request,
    http: aiohttp.ClientSession,
    url: str,
    headers: CIMultiDict[str],
    *,
    kind: str,
    response_timeout: float,
) -> web.StreamResponse:
    """``request`` sent to ``url`` with ``headers``; the member's answer streamed back."""
    with counted(kind):
        data = _body(request) if request.can_read_body else None
        try:
            async with answer_started(response_timeout):
                upstream = await http.request(
                    request.method, URL(url, encoded=True), headers=headers, data=data,
                    allow_redirects=False,
                    # None sent means none: kube-apiserver reads a body without one as JSON,
                    # where aiohttp's application/octet-stream would be refused (kubectl create
                    # --raw).
                    skip_auto_headers=("Content-Type",),
                )  # fmt: skip
        except (aiohttp.ClientError, TimeoutError) as error:
            raise MemberUnreachable(error) from None
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _NOT_RELAYED:
                    response.headers.add(name, value)
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError) as error:
                logger.info("the member's answer to %s ended early: %r", request.path, error)
            await response.write_eof()
            return response


async def relay_websocket(
    request: web.Request,
    http: aiohttp.ClientSession,
    url: str,
    headers: CIMultiDict[str],
    *,
    kind: str,
    response_timeout: float,
) -> web.StreamResponse:
    """The client's WebSocket joined to one opened on the member at ``url``."""
    offered = [
        protocol.strip()
        for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
        if protocol.strip()
    ]
    with counted(kind):
        try:
            async with answer_started(response_timeout):
                member = await http.ws_connect(
                    URL(url, encoded=True), protocols=offered, headers=headers, max_msg_size=0,
                    autoping=True, heartbeat=None,
                )  # fmt: skip
        except aiohttp.WSServerHandshakeError as error:
            raise StatusError(
                error.status if error.status >= 400 else 502,
                f"the member refused the {kind} session: {error.message}",
            ) from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise MemberUnreachable(error) from None
        client = web.WebSocketResponse(
            protocols=[member.protocol] if member.protocol else (), max_msg_size=0
        )
        try:
            await client.prepare(request)
            await _join(client, member)
        finally:
            await member.close()
            await client.close()
        return client


async def _join(client: web.WebSocketResponse, member: aiohttp.ClientWebSocketResponse) -> None:
    """Messages both ways until either side closes; then the other is closed too. A member
    whose connection breaks before it sent the session's end (kube-apiserver ends an exec
    with its Status on channel 3, and may close without a close frame) ends the client's
    session with a failure on that channel, so kubectl exits non-zero instead of as if the
    command had succeeded."""

    ended: list[bool] = []  # the member sent the session's end, a Status on channel 3

    async def pump(source: Any, sink: Any) -> None:
        async for message in source:
            if message.type == aiohttp.WSMsgType.BINARY:
                if source is member and message.data[:1] == b"\x03":
                    ended.append(True)
                await sink.send_bytes(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                if source is member and message.data[:1] == "3":
                    ended.append(True)
                await sink.send_str(message.data)
            else:
                break

    upstream = asyncio.create_task(pump(member, client), name="reach: member -> client")
    tasks = [
        asyncio.create_task(pump(client, member), name="reach: client -> member"),
        upstream,
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        lost = member.close_code != aiohttp.WSCloseCode.OK and not ended
        if upstream.done() and lost and not client.closed:
            await _report_lost(client, member)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _report_lost(
    client: web.WebSocketResponse, member: aiohttp.ClientWebSocketResponse
) -> None:
    """The member's side broke: say so on the stream protocol's error channel (3), then close
    as an unexpected condition."""
    reason = f"the connection to the member was lost ({member.exception() or member.close_code})"
    logger.info("reach session ended: %s", reason)
    status = orjson.dumps(
        {"metadata": {}, "status": "Failure", "message": reason, "reason": "InternalError",
         "code": 500}
    )  # fmt: skip
    with contextlib.suppress(Exception):
        protocol = client.ws_protocol or ""
        if protocol.startswith("base64."):
            await client.send_str("3" + base64.b64encode(status).decode())
        elif protocol.endswith("channel.k8s.io"):
            await client.send_bytes(b"\x03" + status)
        await client.close(code=aiohttp.WSCloseCode.INTERNAL_ERROR, message=b"member lost")
