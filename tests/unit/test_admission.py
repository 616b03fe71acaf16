"""Admission control without a server: requests beyond the limit get 429 at once."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from clusterpedia.apiserver.admission import Admission
from clusterpedia.apiserver.chain import build_chain, with_recovery, with_request_info


async def test_requests_beyond_the_limit_get_429_and_health_is_never_refused() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request, delegate: object) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="done")

    chain = build_chain(
        [with_request_info, with_recovery, Admission(max_inflight=2, max_watches=1), slow]
    )
    held = [asyncio.create_task(chain(make_mocked_request("GET", "/api"))) for _ in range(2)]
    watch = asyncio.create_task(chain(make_mocked_request("GET", "/api/v1/pods?watch=true")))
    await asyncio.sleep(0)
    refused = await chain(make_mocked_request("GET", "/api"))
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    body = orjson.loads(refused.body)  # type: ignore[attr-defined]
    assert body["reason"] == "TooManyRequests" and body["details"]["retryAfterSeconds"] == 1
    refused_watch = await chain(make_mocked_request("GET", "/api/v1/pods?watch=1"))
    assert refused_watch.status == 429 and "watches" in orjson.loads(refused_watch.body)["message"]  # type: ignore[attr-defined]
    health = asyncio.create_task(chain(make_mocked_request("GET", "/readyz")))
    release.set()
    for task in (*held, watch, health):
        assert (await task).status == 200
    assert (await chain(make_mocked_request("GET", "/api"))).status == 200


async def test_a_zero_limit_refuses_everything_but_health() -> None:
    limit = 0

    async def ok(request: web.Request, delegate: object) -> web.StreamResponse:
        return web.Response(text="ok")

    chain = build_chain(
        [with_request_info, with_recovery, Admission(max_inflight=limit, max_watches=limit), ok]
    )
    assert (await chain(make_mocked_request("GET", "/api"))).status == 429
    assert (await chain(make_mocked_request("GET", "/livez"))).status == 200
