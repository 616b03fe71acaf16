"""Health, version and metrics paths.

``/healthz`` and ``/livez`` say the process serves; ``/readyz`` also checks that the storage
answers (a replica that cannot read should leave the Service). The health paths are open to
anyone (the authorization filter always allows them); ``/version`` and ``/metrics`` are
authorized like any other path.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest

from clusterpedia import __version__

from .chain import Handler

logger = logging.getLogger(__name__)
TASKS = Gauge(
    "clusterpedia_event_loop_tasks",
    "Tasks on the event loop when /metrics was read (one that only grows is a leak).",
)


def version_info() -> dict[str, Any]:
    """What ``kubectl version`` and client wrappers read from ``/version``."""
    return {
        "major": "1",
        "minor": "35",
        "gitVersion": f"v{__version__}+clusterpedia-py",
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "cpython",
        "platform": f"{platform.system().lower()}/{platform.machine()}",
    }


class SystemServer:
    """Serves health, version and metrics; ``ready`` checks the storage (cached for 1 s)."""

    def __init__(self, *, ready: Callable[[], Awaitable[None]]):
        self.ready = ready
        self._checked: tuple[float, str] | None = None

    async def _readiness(self) -> str:
        if self._checked is not None and time.monotonic() - self._checked[0] < 1.0:
            return self._checked[1]
        try:
            await asyncio.wait_for(self.ready(), timeout=5)
            problem = ""
        except Exception as error:
            problem = f"storage: {error}"[:300]
            logger.warning("not ready: %s", problem)
        self._checked = (time.monotonic(), problem)
        return problem

    async def __call__(self, request: web.Request, delegate: Handler) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez"):
            return web.Response(text="ok")
        if path == "/readyz":
            problem = await self._readiness()
            if problem:
                return web.Response(status=503, text=f"[-]storage failed: {problem}\n")
            return web.Response(text="ok")
        if path == "/version":
            return web.json_response(version_info())
        if path == "/metrics":
            TASKS.set(len(asyncio.all_tasks()))
            return web.Response(
                body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )
        return await delegate(request)
