"""Fault injection for tests: proxies a test puts between the product and a real server.

- :class:`TcpProxy`, between the product and its database: ``cut()`` is a database restart as
  the product sees one: every open connection is reset and new ones are refused, until
  ``restore()``. The real server, shared by the whole test session, is never touched.
- :class:`SilentMember`, a member that accepts connections, completes the TLS handshake and
  never answers a request (a hung kube-apiserver, as the product sees one).
- :class:`MemberProxy`, between the product and a member kube-apiserver: it forwards every
  request (as the member's admin) and, while ``fault`` is set, misbehaves as a broken member
  would: slow answers, 5xx, watches that hang, truncated JSON.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Any

import aiohttp
import trustme
import yaml
from aiohttp import web

from clusterpedia.testing.processes import free_port


class _LoopThread:
    """An event loop on a thread of its own: the proxy's work never runs on (nor counts as a
    task of) the loop of the test or product it stands in front of."""

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _run(self, coroutine: Any) -> Any:
        """Run ``coroutine`` on the proxy's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class TcpProxy(_LoopThread):
    def __init__(self, target_host: str, target_port: int):
        super().__init__()
        self.target = (target_host, target_port)
        self.connections = 0  # open client connections
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    def start(self) -> TcpProxy:
        self._thread.start()
        self.restore()
        return self

    def restore(self) -> None:
        """Accept connections again."""

        async def listen() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        self._run(listen())

    def cut(self) -> None:
        """Reset every connection and refuse new ones."""

        async def cut() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                writer.transport.abort()

        self._run(cut())

    def close(self) -> None:
        self.cut()
        self._stop_loop()

    async def _handle(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter):  # type: ignore[no-untyped-def]
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            client.transport.abort()
            return
        self.connections += 1
        self._writers |= {client, upstream}
        try:
            await asyncio.gather(
                self._pipe(client_reader, upstream), self._pipe(upstream_reader, client)
            )
        finally:
            self.connections -= 1
            self._writers -= {client, upstream}
            for writer in (client, upstream):
                writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


class SilentMember(_LoopThread):
    """HTTPS on loopback that reads requests and never answers them; ``connections`` counts
    those open now (the product must close its own when it gives up)."""

    def __init__(self) -> None:
        super().__init__()
        self.ca = trustme.CA()
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(self._context)
        self.connections = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()

    def start(self) -> SilentMember:
        self._thread.start()

        async def listen() -> None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, ssl=self._context
            )

        self._run(listen())
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.read(65536):
                pass  # read everything, answer nothing
        except (ConnectionError, OSError):
            pass
        finally:
            self.connections -= 1
            writer.transport.abort()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        self._run(stop())
        self._stop_loop()


# What MemberProxy.fault can be set to.
SLOW = "slow"  # every answer trickles out, 64 bytes every 0.5 s (health probes included)
ERROR = "error"  # resource requests get 503, open ones are cut (health and discovery answer)
HANG = "hang"  # watches, new and already open, stop sending; the connection stays open
TRUNCATE = "truncate"  # resource answers and watch events are cut in half mid-JSON


class MemberProxy(_LoopThread):
    """A plain-HTTP front for a member, on its own thread and event loop (so the tasks a test
    counts in its own loop are the product's alone). With a ``prefix`` it serves the member
    under that path only, as Rancher serves clusters under ``/k8s/clusters/<id>``, and
    answers 404 elsewhere."""

    def __init__(self, member_url: str, ssl_context: ssl.SSLContext, *, prefix: str = ""):
        super().__init__()
        self.member_url = member_url
        self.prefix = prefix.rstrip("/")
        self.outside_prefix = 0  # requests that missed the prefix
        self.ssl_context = ssl_context
        self.fault: str | None = None
        self.requests = 0
        self.open_requests = 0  # requests being answered now (open watches included)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def kubeconfig(self) -> bytes:
        """A kubeconfig for the product: this proxy, without credentials (plain HTTP; the
        proxy reaches the member as its admin)."""
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
                "users": [{"name": "proxy", "user": {}}],
                "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
                "current-context": "proxy",
            }
        ).encode()

    def start(self) -> MemberProxy:
        self._thread.start()

        async def start() -> None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl_context)
            )
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._forward)
            # A client that goes away cancels its request, hung watches included.
            self._runner = web.AppRunner(
                app, access_log=None, shutdown_timeout=1, handler_cancellation=True
            )
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        self._run(start())
        return self

    def close(self) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        self._run(stop())
        self._stop_loop()

    def __enter__(self) -> MemberProxy:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.open_requests += 1
        try:
            return await self._answer(request)
        except ConnectionError:  # the product went away (it timed out, or was stopped)
            return web.Response(status=499)
        finally:
            self.open_requests -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        path = request.rel_url.raw_path  # as sent, still percent-encoded
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                self.outside_prefix += 1
                return web.Response(status=404, text="404 page not found")
            path = path.removeprefix(self.prefix)
        query = request.rel_url.raw_query_string
        if self.fault == ERROR and _is_resource_path(path):
            return web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": "injected fault: etcdserver: leader changed",
                    "reason": "ServiceUnavailable",
                    "code": 503,
                },
                status=503,
            )
        watch = request.query.get("watch") in ("true", "1")
        async with self._session.request(
            request.method,
            self.member_url + path + (f"?{query}" if query else ""),
            data=await request.read() or None,
            headers={k: v for k, v in request.headers.items() if k.lower() in _FORWARDED},
            timeout=aiohttp.ClientTimeout(total=None),
        ) as upstream:
            headers = {"Content-Type": upstream.headers.get("Content-Type", "application/json")}
            if not watch and self.fault == TRUNCATE and _is_resource_path(path):
                body = await upstream.read()
                return web.Response(
                    status=upstream.status, body=body[: len(body) // 2], headers=headers
                )
            response = web.StreamResponse(status=upstream.status, headers=headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                fault = self.fault
                if fault == ERROR and _is_resource_path(path):
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if fault == HANG and watch:
                    await asyncio.Event().wait()  # until the client goes away
                if fault == TRUNCATE and watch:
                    await response.write(chunk[: len(chunk) // 2] + b"\n")
                    await response.write_eof()
                    return response
                while chunk and self.fault == SLOW:
                    await response.write(chunk[:64])
                    chunk = chunk[64:]
                    await asyncio.sleep(0.5)
                await response.write(chunk)
            await response.write_eof()
            return response


_FORWARDED = {"accept", "content-type"}


def _is_resource_path(path: str) -> bool:
    """/api/v1/<resource>... and /apis/<group>/<version>/<resource>...: not discovery."""
    parts = path.strip("/").split("/")
    return (parts[0] == "api" and len(parts) >= 3) or (parts[0] == "apis" and len(parts) >= 4)
