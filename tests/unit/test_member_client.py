"""The member client's connections and politeness, against a small in-process HTTP member:
watches never starve the health probe or each other, 429s are waited out as the member asks,
and the request rate is bounded per member."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from clusterpedia.kube.access import access_from_kubeconfig
from clusterpedia.kube.client import KubeClient, KubeError, TokenBucket

WATCHES = 48  # more than aiohttp's default pool of 100 would matter for; ours had a cap of 32


class FakeMember:
    """Watches that stay open and silent; ``/api`` throttled for its first ``throttled``
    requests; ``/readyz`` always ok."""

    def __init__(self) -> None:
        self.throttled = 0
        self.api_requests = 0
        self.open_watches = 0

    async def watch(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        self.open_watches += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.open_watches -= 1
        return response

    async def api(self, request: web.Request) -> web.Response:
        self.api_requests += 1
        if self.api_requests <= self.throttled:
            return web.json_response(
                {"kind": "Status", "code": 429, "reason": "TooManyRequests"},
                status=429,
                headers={"Retry-After": "0"},
            )
        return web.json_response({"kind": "APIVersions", "versions": ["v1"]})

    async def readyz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")


@pytest_asyncio.fixture
async def member() -> AsyncIterator[tuple[FakeMember, KubeClient]]:
    fake = FakeMember()
    app = web.Application()
    app.router.add_get("/api/v1/configmaps", fake.watch)
    app.router.add_get("/api", fake.api)
    app.router.add_get("/readyz", fake.readyz)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, listener)
    await site.start()
    kubeconfig = yaml.safe_dump(
        {
            "clusters": [{"name": "m", "cluster": {"server": f"http://127.0.0.1:{listener.getsockname()[1]}"}}],
            "users": [{"name": "m", "user": {}}],
            "contexts": [{"name": "m", "context": {"cluster": "m", "user": "m"}}],
            "current-context": "m",
        }
    ).encode()  # fmt: skip
    client = KubeClient(access_from_kubeconfig(kubeconfig), request_timeout=5)
    try:
        yield fake, client
    finally:
        await client.close()
        await runner.cleanup()


async def _watch(client: KubeClient) -> None:
    async for _ in client.watch("/api/v1/configmaps", resource_version="1"):
        pass


async def test_open_watches_starve_neither_the_probe_nor_other_requests(
    member: tuple[FakeMember, KubeClient],
) -> None:
    fake, client = member
    watches = [asyncio.create_task(_watch(client)) for _ in range(WATCHES)]
    try:
        for _ in range(200):
            if fake.open_watches == WATCHES and client.open_watches == WATCHES:
                break
            await asyncio.sleep(0.02)
        assert fake.open_watches == client.open_watches == WATCHES
        # With the pool's old cap of 32 both of these waited for a free connection and timed out.
        assert await client.get_text("/readyz", timeout=2) == (200, "ok")
        assert (await client.get("/api", timeout=2))["versions"] == ["v1"]
        assert client.requests_in_flight == 0
    finally:
        for task in watches:
            task.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
    assert client.open_watches == 0


async def test_a_429_is_waited_out_as_the_member_asks(
    member: tuple[FakeMember, KubeClient],
) -> None:
    fake, client = member
    fake.throttled = 3
    assert (await client.get("/api"))["versions"] == ["v1"]
    assert fake.api_requests == 4  # three 429s, then the answer
    fake.api_requests, fake.throttled = 0, 100
    client.throttle_retries = 2
    with pytest.raises(KubeError) as failed:
        await client.get("/api")
    assert failed.value.status == 429 and fake.api_requests == 3


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(qps=10, burst=3, clock=lambda: now[0])
    assert [bucket.delay() for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert bucket.delay() == pytest.approx(0.1)  # then one per 1/qps, queued in order
    assert bucket.delay() == pytest.approx(0.2)
    now[0] += 10  # idle: the bucket refills up to the burst, no further
    assert [bucket.delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.delay() == pytest.approx(0.1)
    unlimited = TokenBucket(qps=0, burst=1, clock=lambda: now[0])
    assert all(unlimited.delay() == 0 for _ in range(1000))
