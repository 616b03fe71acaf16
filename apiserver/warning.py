"""Warnings for the client, recorded on the request by any layer and sent as ``Warning``
headers when the answer's headers go out, whoever prepares it (a plain answer, a streamed list,
a watch): kube-apiserver's warning recorder, one place instead of each writer's own headers."""

from __future__ import annotations

from aiohttp import web

WARNINGS = web.RequestKey("warnings", list)
MAX_TEXT = 400


def add_warning(request: web.Request, text: str) -> None:
    """Warn the client of ``request``: a ``299`` warning, as kube-apiserver sends them."""
    cleaned = text.replace('"', "'").replace("\n", " ").replace("\r", " ")[:MAX_TEXT]
    request.setdefault(WARNINGS, []).append(f'299 - "{cleaned}"')


async def send_warnings(request: web.Request, response: web.StreamResponse) -> None:
    """The application's ``on_response_prepare`` signal: the recorded warnings go out."""
    for warning in request.get(WARNINGS, ()):
        response.headers.add("Warning", warning)
