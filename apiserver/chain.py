"""The handler chain: filters and servers, each serving what it owns and delegating the rest.

As in Kubernetes' generic apiserver, the chain is assembled in one place (``app.py``) from
layers that know nothing of each other. A layer is ``async (request, delegate) -> response``:
a filter does its part and calls ``delegate``; a server answers the paths it owns and calls
``delegate`` for the others. The chain ends in a 404 ``Status``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from yarl import URL

from clusterpedia.paths import without_long_running_prefix
from clusterpedia.storage import InvalidQuery, ResourceVersionTooLarge, StorageError

from .requestinfo import RECORD, resolve_request
from .status import StatusError, no_route

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Layer = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

logger = logging.getLogger(__name__)


async def not_found(request: web.Request) -> web.StreamResponse:
    """The end of the chain: nobody owns this path."""
    raise no_route()


def build_chain(layers: Sequence[Layer]) -> Handler:
    """``layers[0]`` runs first; each delegates to the next; the last delegates to 404."""
    handler: Handler = not_found
    for layer in reversed(layers):
        handler = _bind(layer, handler)
    return handler


def _bind(layer: Layer, delegate: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await layer(request, delegate)

    return handle


async def with_request_info(request: web.Request, delegate: Handler) -> web.StreamResponse:
    """Work the request out once, for every later layer (``requestinfo.RequestRecord``).

    A NUL character is refused here, once for every parameter and path segment: no Kubernetes
    name, selector or token holds one, and PostgreSQL text cannot (it would fail as a storage
    error, a 503, instead of the client's 400)."""
    if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in request.query.items()):
        return StatusError(400, "the request holds a NUL character").response()
    # The long-running layout (paths.py) is served as the path it stands for, from here on.
    unwrapped = without_long_running_prefix(request.rel_url.raw_path)
    if unwrapped is not None:
        query = request.rel_url.raw_query_string
        target = URL(unwrapped + (f"?{query}" if query else ""), encoded=True)
        request = request.clone(rel_url=target)
    try:
        request[RECORD] = resolve_request(request)
    except InvalidQuery as error:  # a malformed forward marker
        return StatusError.from_reason(error.reason, error.message).response()
    return await delegate(request)


async def with_recovery(request: web.Request, delegate: Handler) -> web.StreamResponse:
    """Every failure becomes a ``Status``; a bug is logged with its traceback, never sent."""
    try:
        return await delegate(request)
    except StatusError as error:
        return error.response()
    except InvalidQuery as error:
        return StatusError.from_reason(error.reason, error.message).response()
    except ResourceVersionTooLarge as error:
        return too_large(error).response()
    except StorageError as error:
        logger.warning("storage failed for %s %s: %s", request.method, request.path_qs, error)
        return StatusError(503, "the storage is unavailable; try again").response()
    except web.HTTPException:
        raise
    except ConnectionResetError:
        raise
    except Exception:
        logger.exception("internal error serving %s %s", request.method, request.path_qs)
        return StatusError(500, "Internal error occurred: see the server log").response()


def too_large(error: ResourceVersionTooLarge) -> StatusError:
    """kube-apiserver's answer to a resourceVersion it has not reached, retried by clients."""
    return StatusError(
        504,
        str(error),
        reason="Timeout",
        details={
            "causes": [
                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
            ],
            "retryAfterSeconds": 1,
        },
        headers={"Retry-After": "1"},
    )


async def read_only(request: web.Request, delegate: Handler) -> web.StreamResponse:
    """Everything here is read-only: other methods get 405 before any server sees them."""
    if request.method not in ("GET", "HEAD"):
        raise StatusError(
            405,
            f"the server does not allow this method on the requested resource: {request.method}",
        )
    return await delegate(request)
