"""Our API server in a thread with its own event loop (as ``kopf.testing.KopfRunner`` runs an
operator), so tests and the real kubectl they run as subprocesses talk to it as any client would."""

from __future__ import annotations

import asyncio
import ssl
import threading
import urllib.error
import urllib.request
from typing import Any

import orjson

from clusterpedia.testing.aggregation import register_apiservice
from clusterpedia.testing.controlplane import APIServer as HostServer

from .server import ClusterpediaServer, ServerConfig

PREFIX = "/apis/clusterpedia.io/v1beta1/resources"
__all__ = ["PREFIX", "ServerThread", "parse", "register_apiservice", "start_server"]


class ServerThread:
    """Runs :class:`ClusterpediaServer` until :meth:`stop`; ``start`` raises what start-up
    raised."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.server: ClusterpediaServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="apiserver", daemon=True)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.server = ClusterpediaServer(self.config)
        try:
            await self.server.start()
        except BaseException as error:
            self._error = error
            self._ready.set()
            await self.server.stop()
            return
        self._ready.set()
        await self._stop.wait()
        await self.server.stop()

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the API server did not start within 60 s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        assert self.server is not None and self.server.certificate is not None
        return self.server.certificate.ca_pem

    def ssl_context(self, *, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        if cert is not None:
            context.load_cert_chain(*cert)
        return context

    def request(
        self,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        cert: tuple[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """GET ``path`` directly (not through the aggregator): status, headers, body."""
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, headers=all_headers)
        try:
            with urllib.request.urlopen(
                request, context=self.ssl_context(cert=cert), timeout=30
            ) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()


def start_server(host: HostServer, storage_url: str, **config: Any) -> ServerThread:
    """Our server on a free loopback port, authenticating against ``host``; ``config`` sets
    any other :class:`ServerConfig` field."""
    return ServerThread(
        ServerConfig(
            storage_url=storage_url,
            kubeconfig=str(host.kubeconfig),
            bind_address="127.0.0.1",
            port=0,
            **config,
        )
    ).start()


def parse(body: bytes) -> Any:
    return orjson.loads(body)
