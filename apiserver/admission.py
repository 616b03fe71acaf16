"""Admission control: a bounded number of requests in flight, as kube-apiserver's
``--max-requests-inflight``. Beyond it the server answers 429 with ``Retry-After`` at once,
instead of queueing without bound until every client times out.

Watches are long-running, so they have their own bound (``max_watches``) and never take a slot
from short requests; health paths are never refused, so probes keep telling the truth under load.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import Counter, Gauge

from .chain import Handler
from .requestinfo import record_of
from .requestmetrics import TERMINATED
from .status import StatusError

RETRY_AFTER_SECONDS = 1
IN_FLIGHT = Gauge(
    "clusterpedia_apiserver_in_flight",
    "Requests being served; kind=watch counts open watch streams apart.",
    ["kind"],
)
REFUSED = Counter(
    "clusterpedia_apiserver_refused_total",
    "Requests answered 429 because too many were in flight.",
    ["kind"],
)


class Admission:
    def __init__(self, *, max_inflight: int, max_watches: int):
        self.limits = {False: max_inflight, True: max_watches}
        self.inflight = {False: 0, True: 0}

    async def __call__(self, request: web.Request, delegate: Handler) -> web.StreamResponse:
        record = record_of(request)
        if record.health:
            return await delegate(request)
        # Long-running: watches, and sessions reached through to members (reach.py).
        watch = record.long_running
        kind = "watch" if watch else "request"
        if self.inflight[watch] >= self.limits[watch]:
            what = "watches" if watch else "requests"
            REFUSED.labels(kind).inc()
            request[TERMINATED] = True
            raise StatusError(
                429,
                f"Too many {what} in flight ({self.limits[watch]}), please try again later.",
                details={"retryAfterSeconds": RETRY_AFTER_SECONDS},
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.inflight[watch] += 1
        gauge = IN_FLIGHT.labels(kind)
        gauge.inc()
        try:
            return await delegate(request)
        finally:
            self.inflight[watch] -= 1
            gauge.dec()
