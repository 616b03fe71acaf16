"""The aiohttp application: the handler chain, assembled in this one place.

Installed as ``clusterpedia.apiserver``. Like ``operator/``, this folder has no top-level
``__init__.py`` (see README, "Layout").

Order, as Kubernetes' ``DefaultBuildHandlerChain``: request info -> request metrics (every
answer counted, timed and sized with kube-apiserver's names) -> panic recovery ->
admission (requests in flight; before authentication, so an overload never reaches the host's
TokenReview) -> request deadline (inside admission, so a slot is held until the answer is
sent) -> authentication -> authorization -> reach-through to members (subresources, forwarded
and unsynced reads, the proxy path; before the read-only guard, since an exec or a POST through
the proxy path may write there) -> read-only guard -> system paths (health, version, metrics)
-> the clusterpedia.io group (discovery, collectionresources) -> ``resources`` -> 404 Status.
A later server (a proxy, say) is one more entry in the list; no other layer changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from clusterpedia.storage import Catalog, ObjectReads

from .admission import Admission
from .authn import Authenticator, authentication
from .authz import Authorizer, authorization
from .chain import (
    Layer,
    build_chain,
    read_only,
    with_recovery,
    with_request_info,
)
from .deadline import RequestDeadline
from .group import GroupServer
from .reach import ReachServer
from .requestmetrics import request_metrics
from .resources import ResourcesServer
from .system import SystemServer, version_info
from .warning import send_warnings
from .watch import WatchServer

# A label selector or a list of names can be long, but not megabytes: aiohttp refuses longer
# request lines and headers before any handler runs.
MAX_LINE = 64 * 1024
MAX_BODY = 1024 * 1024


def build_layers(
    *,
    reader: ObjectReads,
    catalog: Catalog,
    authenticator: Authenticator,
    authorizer: Authorizer,
    check_clusters: bool,
    ready: Callable[[], Awaitable[None]],
    watch: WatchServer | None = None,
    admission: Admission | None = None,
    deadline: RequestDeadline | None = None,
    reach: ReachServer | None = None,
) -> list[Layer]:
    return [
        with_request_info,
        request_metrics(catalog),
        with_recovery,
        admission or Admission(max_inflight=400, max_watches=2000),
        deadline or RequestDeadline(timeout=60),
        authentication(authenticator),
        authorization(authorizer, catalog=catalog, check_clusters=check_clusters),
        *([reach] if reach is not None else []),
        read_only,
        SystemServer(ready=ready),
        GroupServer(reader=reader, catalog=catalog),
        ResourcesServer(reader=reader, catalog=catalog, version=version_info(), watch=watch),
    ]


def build_app(layers: Sequence[Layer]) -> web.Application:
    app = web.Application(
        client_max_size=MAX_BODY,
        handler_args={"max_line_size": MAX_LINE, "max_field_size": MAX_LINE},
    )
    chain = build_chain(layers)
    app.on_response_prepare.append(send_warnings)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await chain(request)

    app.router.add_route("*", "/{tail:.*}", handle)
    return app
