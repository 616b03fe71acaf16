"""``watch=true`` on list paths: a stream of events from the change log, as Kubernetes sends it.

Each event is one JSON object and a newline (``{"type": ..., "object": ...}``) in a chunked
200 response. ``object`` is the stored bytes spliced in, or a one-row ``Table`` (column
definitions on the first event only, as kube-apiserver does), or ``PartialObjectMetadata``.

resourceVersion: unset or "0" starts at the newest change; N sends every change after N once,
in order; N older than the retained log gets an ``ERROR`` event with 410 Expired, N newer than
the newest change a 504 Timeout ``Status``. ``sendInitialEvents=true`` is refused with 422
(lists carry the resourceVersion to start a watch from). ``allowWatchBookmarks`` adds BOOKMARK
events every ``bookmark_interval`` and before a timeout closes the stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from clusterpedia.search.params import parse_bool, parse_int
from clusterpedia.storage import ChangeEvent, Marks, Query, SyncedType, wait_for_head
from clusterpedia.watch.feed import ChangeFeed, Ended, Expired, Scope, Subscription
from clusterpedia.watch.matcher import event_matcher

from .lists import as_partial, metadata_wrapper
from .negotiation import Form
from .requestmetrics import watch_events_sent
from .status import StatusError
from .tables import TableBuilder

logger = logging.getLogger(__name__)
WRITE_TIMEOUT = 30.0  # a client that reads nothing for this long is cut off
WRITE_BURST = 256  # events joined into one write at most


@dataclass(frozen=True)
class WatchSettings:
    capacity: int = 1000  # events a watcher may fall behind before it gets 410
    bookmark_interval: float = 30.0
    # Without timeoutSeconds, as kube-apiserver: random in [min-request-timeout, 2x).
    default_timeout: tuple[int, int] = (1800, 3600)


@dataclass(frozen=True)
class WatchRequest:
    after: int | None  # None: from the newest change
    timeout: float
    bookmarks: bool


def parse_watch_request(params: Any, settings: WatchSettings) -> WatchRequest:
    """The watch parameters; :class:`StatusError` or ``InvalidQuery`` when they are bad."""
    send_initial = params.get("sendInitialEvents")
    if send_initial is not None and parse_bool(send_initial, what="sendInitialEvents"):
        raise StatusError(
            422,
            "sendInitialEvents is not supported: list, then watch from the list's resourceVersion",
            reason="Invalid",
        )
    if params.get("resourceVersionMatch") and send_initial is None:
        raise StatusError(
            422,
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            reason="Invalid",
        )
    raw_rv = params.get("resourceVersion", "")
    after = None if raw_rv in ("", "0") else parse_int(raw_rv, what="resourceVersion")
    timeout_text = params.get("timeoutSeconds")
    timeout = parse_int(timeout_text, what="timeoutSeconds") if timeout_text else 0
    if timeout <= 0:
        timeout = random.randint(*settings.default_timeout)
    bookmarks_text = params.get("allowWatchBookmarks")
    bookmarks = parse_bool(bookmarks_text, what="allowWatchBookmarks") if bookmarks_text else False
    return WatchRequest(after=after, timeout=float(timeout), bookmarks=bookmarks)


class EventEncoder:
    """Encodes events in the negotiated form."""

    def __init__(
        self, synced: SyncedType, form: Form, query: Query, table: TableBuilder | None
    ) -> None:
        self.synced = synced
        self.form = form
        self.table = table
        self._headers_sent = False
        self._wrap: Callable[[bytes], bytes] | None = None
        if form is Form.METADATA:
            self._wrap = as_partial
        elif query.metadata_only:
            self._wrap = metadata_wrapper(synced.rtype.api_version, synced.kind)

    def event(self, event: ChangeEvent) -> bytes:
        if self.table is not None:
            return _line(event.type, orjson.dumps(self._table(event)))
        if self._wrap is not None:
            metadata = orjson.dumps(event.parsed.get("metadata") or {})
            return _line(event.type, self._wrap(metadata))
        return _line(event.type, event.object)

    def _table(self, event: ChangeEvent) -> dict[str, Any]:
        assert self.table is not None
        first, self._headers_sent = not self._headers_sent, True
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(event.rv)},
            "columnDefinitions": self.table.definitions() if first else [],
            "rows": [self.table.row_of(event.parsed, cluster=event.cluster)],
        }

    def bookmark(self, rv: int) -> bytes:
        if self.table is not None:
            table = {
                "kind": "Table",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": str(rv)},
                "columnDefinitions": [],
                "rows": [],
            }
            return _line("BOOKMARK", orjson.dumps(table))
        # Only metadata.resourceVersion, in the kind the stream's objects have.
        wrap = self._wrap or metadata_wrapper(self.synced.rtype.api_version, self.synced.kind)
        return _line("BOOKMARK", wrap(b'{"resourceVersion":"%d"}' % rv))

    @staticmethod
    def error(error: StatusError) -> bytes:
        return _line("ERROR", orjson.dumps(error.body()))


def _line(kind: str, obj: bytes) -> bytes:
    return b'{"type":"' + kind.encode() + b'","object":' + obj + b"}\n"


class WatchServer:
    """Serves watch requests from one process-wide :class:`ChangeFeed`."""

    def __init__(self, feed: ChangeFeed, settings: WatchSettings):
        self.feed = feed
        self.settings = settings

    async def _marks(self, *, at_least: int) -> Marks:
        """The log's marks once its head reaches ``at_least``: a watch from a resourceVersion
        another server (or a replica ahead of ours) gave waits, as kube-apiserver's watch
        cache does, then gets 504 ``ResourceVersionTooLarge``, which clients retry."""
        return await wait_for_head(self.feed.log.marks, lambda marks: marks.head, at_least)

    async def serve(
        self,
        request: web.Request,
        *,
        query: Query,
        synced: SyncedType,
        form: Form,
        table: TableBuilder | None,
    ) -> web.StreamResponse:
        watch = parse_watch_request(request.query, self.settings)
        matcher = event_matcher(query)
        marks = await self._marks(at_least=watch.after or 0)
        after = marks.head if watch.after is None else watch.after
        encoder = EventEncoder(synced, form, query, table)
        scope = Scope(
            group=synced.group,
            version=synced.version,
            resource=synced.resource,
            cluster=query.clusters[0] if len(query.clusters) == 1 else None,
        )
        subscription = self.feed.subscribe(
            matcher, after=after, scope=scope, capacity=self.settings.capacity
        )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            if after < marks.pruned:
                await self._send(response, encoder.error(_expired(after)))
                return response
            await self._stream(response, subscription, encoder, watch)
            await response.write_eof()
        except (ConnectionResetError, TimeoutError) as error:
            logger.debug("watch %s ended by the client: %r", request.path, error)
            if request.transport is not None:
                request.transport.close()
        finally:
            subscription.close()
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        subscription: Subscription,
        encoder: EventEncoder,
        watch: WatchRequest,
    ) -> None:
        started = time.monotonic()
        deadline = started + watch.timeout
        interval = self.settings.bookmark_interval
        next_bookmark = started + interval if watch.bookmarks else None
        while True:
            now = time.monotonic()
            if now >= deadline:
                if watch.bookmarks:
                    await self._send(response, encoder.bookmark(subscription.progress()))
                return
            wait = deadline - now
            if next_bookmark is not None:
                wait = max(0.0, min(wait, next_bookmark - now))
            try:
                event = await subscription.next(wait)
            except Expired as error:
                await self._send(response, encoder.error(StatusError(410, str(error))))
                return
            except Ended:
                return
            if event is not None:
                # Whatever else is already queued goes in the same write: one chunk and one
                # TLS record for a burst instead of one per event.
                burst = [event, *subscription.ready(WRITE_BURST - 1)]
                await self._send(response, b"".join(encoder.event(e) for e in burst))
                watch_events_sent(event.group, event.version, event.resource, len(burst))
            if next_bookmark is not None and time.monotonic() >= next_bookmark:
                await self._send(response, encoder.bookmark(subscription.progress()))
                next_bookmark = time.monotonic() + interval

    @staticmethod
    async def _send(response: web.StreamResponse, data: bytes) -> None:
        await asyncio.wait_for(response.write(data), WRITE_TIMEOUT)


def _expired(rv: int) -> StatusError:
    return StatusError(410, f"too old resource version: {rv}", reason="Expired")
