"""Slow clients against the real server (TLS, a real host for authentication and
authorization): one that sends its request headers too slowly is disconnected, and one that
stops reading a large list is cut off at the request deadline, giving back its admission slot.
A client that behaves meanwhile is served throughout.

SQLite only: what is under test is the HTTP layer, not the database.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from clusterpedia.apiserver.testing import PREFIX, ServerThread, parse, start_server
from clusterpedia.gvr import ResourceType
from clusterpedia.storage.catalog import SyncedType, TypeCatalog
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.databases import fresh_database
from clusterpedia.testing.objects import make_object, storage, upsert
from clusterpedia.testing.waiting import eventually

CONFIGMAPS = ResourceType("", "v1", "configmaps", "ConfigMap")
IDLE_CONNECTION_TIMEOUT = 1.0
REQUEST_TIMEOUT = 2.0
OBJECTS, VALUE_BYTES = 3000, 4000  # a list of ~12 MB: more than loopback's socket buffers


async def _seed(url: str) -> None:
    async with storage(url) as (writer, _):
        await TypeCatalog(writer.engine).replace(
            "bulk", [SyncedType("bulk", "", "v1", "configmaps", "ConfigMap", True, "configmap")]
        )
        for start in range(0, OBJECTS, 500):
            objects = [
                make_object(CONFIGMAPS, name=f"cm-{index:05d}", cluster="bulk")
                | {"data": {"v": "x" * VALUE_BYTES}}
                for index in range(start, start + 500)
            ]
            await writer.apply(
                cluster="bulk", rtype=CONFIGMAPS, changes=[upsert(o) for o in objects]
            )


@pytest.fixture(scope="module")
def host(aggregator: APIServer) -> APIServer:
    return aggregator


@pytest.fixture(scope="module")
def server(host: APIServer) -> Iterator[ServerThread]:
    with fresh_database("sqlite", label="slow-clients") as url:
        asyncio.run(_seed(url))
        thread = start_server(
            host,
            url,
            request_timeout=REQUEST_TIMEOUT,
            idle_connection_timeout=IDLE_CONNECTION_TIMEOUT,
            max_requests_inflight=2,
        )
        try:
            yield thread
        finally:
            thread.stop()


def front_proxy(host: APIServer, server: ServerThread) -> ssl.SSLContext:
    """What the host's aggregation layer presents: its front-proxy client certificate."""
    assert host.pki.front_proxy_client is not None
    return server.ssl_context(
        cert=(str(host.pki.front_proxy_client.cert), str(host.pki.front_proxy_client.key))
    )


ADMIN = "X-Remote-User: admin\r\nX-Remote-Group: system:masters\r\n"


def connect(host: APIServer, server: ServerThread, *, receive_buffer: int = 0) -> ssl.SSLSocket:
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:  # before connecting, so the window stays small
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.settimeout(30)
    raw.connect(("127.0.0.1", server.port))
    return front_proxy(host, server).wrap_socket(raw, server_hostname="localhost")


def closed_within(tls: ssl.SSLSocket, seconds: float) -> float:
    """Read and discard until the server closes the connection; return how long it took."""
    started = time.monotonic()
    tls.settimeout(seconds)
    try:
        while tls.recv(65536):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass  # reset rather than closed: the same to this client
    return time.monotonic() - started


def served(host: APIServer, server: ServerThread) -> bool:
    """A well-behaved client gets its list."""
    status, _, body = server.request(
        f"{PREFIX}/api/v1/configmaps?limit=5",
        headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"},
        cert=(str(host.pki.front_proxy_client.cert), str(host.pki.front_proxy_client.key)),  # type: ignore[union-attr]
    )
    return status == 200 and len(parse(body)["items"]) == 5


def test_headers_sent_too_slowly_are_cut_off(host: APIServer, server: ServerThread) -> None:
    with connect(host, server) as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")  # and never the blank line
        took = closed_within(tls, 30)
    assert took < 30  # not waiting for ever (aiohttp's own default was an hour)
    assert served(host, server)


def test_a_client_that_stops_reading_is_cut_off_and_frees_its_slot(
    host: APIServer, server: ServerThread
) -> None:
    assert server.server is not None
    # Two slots in all: hold both with clients that read nothing of a ~12 MB list.
    stalled = [connect(host, server, receive_buffer=4096) for _ in range(2)]
    try:
        request = f"GET {PREFIX}/api/v1/configmaps HTTP/1.1\r\nHost: localhost\r\n{ADMIN}\r\n"
        for tls in stalled:
            tls.sendall(request.encode())
        eventually(lambda: not served(host, server), timeout=10, what="both slots taken")
        # The deadline cuts them off and the slots come back, without their reading a byte.
        eventually(lambda: served(host, server), timeout=30, what="a slot free again")
        for tls in stalled:
            closed_within(tls, 30)
    finally:
        for tls in stalled:
            tls.close()
