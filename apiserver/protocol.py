"""Requests aiohttp refuses before any handler runs (an overlong request line or header, a
malformed message) answered as a Kubernetes ``Status``, and logged quietly.

aiohttp answers these with a plain-text 400 and logs an ERROR with a traceback for each, so
an unauthenticated client could fill the log with one bad line a request. Nothing in aiohttp's
public API reaches this path: its server creates a ``RequestHandler`` per connection, so the
runner here hands out a server whose handlers answer with a ``Status`` instead.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .status import StatusError

logger = logging.getLogger(__name__)


class _StatusRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # our own failure: aiohttp's answer and its traceback in the log
            return super().handle_error(request, status, exc, message)
        logger.debug("refused a malformed request from %s: %s", request.remote, message)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started; the connection is closed")
        response = StatusError(status, f"malformed request: {message or 'bad request'}")
        answer = response.response()
        answer.force_close()
        return answer


class _StatusServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _StatusRequestHandler(self, loop=self._loop, **self._kwargs)


class StatusAppRunner(web.AppRunner):
    """An ``AppRunner`` whose malformed-request answers are ``Status`` objects."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The same server with one method more: its class, not its state, changes.
        server.__class__ = _StatusServer
        return server
