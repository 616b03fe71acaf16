"""A deadline for every request that is not a watch, as kube-apiserver's ``--request-timeout``.

The deadline covers sending the answer too: a client that stops reading a list is cut off, so
it cannot hold an admission slot, a database cursor or a buffered page for ever. A request
that runs out of time before anything was sent gets a 504 ``Status``; one that runs out midway
has its connection closed (the client sees a broken answer, never a wrong one). Watches have
their own timeouts (``timeoutSeconds`` and a write timeout in ``watch.py``); sessions reached
through to members (``reach.py``: exec, attach, port-forward, a followed log) end with them.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .chain import Handler
from .requestinfo import record_of
from .requestmetrics import TERMINATED
from .status import StatusError

logger = logging.getLogger(__name__)


class RequestDeadline:
    def __init__(self, timeout: float):
        self.timeout = timeout

    async def __call__(self, request: web.Request, delegate: Handler) -> web.StreamResponse:
        if record_of(request).long_running:
            return await delegate(request)
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                response = await delegate(request)
                # Send it here, inside the deadline (aiohttp would send it after us, unbounded).
                await response.prepare(request)
                await response.write_eof()
                return response
        except TimeoutError:
            if not deadline.expired():
                raise  # a timeout of something inside, not ours
        logger.warning(
            "%s %s did not complete within %.0fs", request.method, request.path_qs, self.timeout
        )
        request[TERMINATED] = True
        if request.writer.output_size == 0:
            raise StatusError(
                504,
                "Timeout: request did not complete within the allotted timeout "
                f"({self.timeout:.0f}s)",
                reason="Timeout",
            )
        if request.transport is not None:
            request.transport.abort()  # close() would wait for a client that reads nothing
        raise ConnectionResetError("request deadline passed while sending the answer")
