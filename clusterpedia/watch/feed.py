"""One reader per process follows the change log and hands each event to every watcher.

The feed polls the log (``after position``, in rv order) and offers each event to each
subscription; a subscription keeps what its filter accepts. Events are read without their
objects, which are loaded only for the events some watcher's type and cluster take; with no
watcher at all the feed reads nothing and moves to the log's head. Nothing is queried per watcher
per tick: watchers only read the log themselves to catch up from an older resourceVersion.
On PostgreSQL the writer's NOTIFY wakes the feed at once, and names the head its commit
reached (so a feed without watchers moves there without a query); elsewhere it polls every
``poll_interval``.

A subscription that falls ``capacity`` events behind is expired (the client gets 410 and
relists) rather than buffered without bound. Events are shared, not copied, between
subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

from clusterpedia.backoff import Backoff
from clusterpedia.storage import ChangeEvent, Changes
from clusterpedia.watch.matcher import EventMatcher

logger = logging.getLogger(__name__)
FEED_BATCH = 500
BACKLOG_PAGE = 500


class Expired(Exception):
    """The watch cannot continue from where it is; the client must relist (410)."""


class Ended(Exception):
    """The server is stopping: the stream just ends, and the client resumes elsewhere."""


@dataclass(frozen=True, slots=True)
class Scope:
    """What a catch-up read can filter in SQL (the matcher decides the rest)."""

    group: str | None = None
    version: str | None = None
    resource: str | None = None
    cluster: str | None = None


class Subscription:
    """The events after ``after`` that ``matcher`` accepts, in rv order, each once."""

    def __init__(
        self,
        feed: ChangeFeed,
        matcher: EventMatcher,
        *,
        after: int,
        scope: Scope,
        capacity: int,
    ):
        self._feed = feed
        self._matcher = matcher
        self._scope = scope
        self._capacity = capacity
        self._live: deque[ChangeEvent] = deque()
        self._ready = asyncio.Event()
        self._expired: str | None = None
        self._ended = False
        # Events in (after, backlog_end] predate the feed's position: they are read from the
        # log, and live events up to backlog_end are ignored.
        self._backlog: deque[ChangeEvent] = deque()
        self._backlog_cursor = after
        self._backlog_end = max(after, feed.position)
        self.last_rv = after

    def in_scope(self, event: ChangeEvent) -> bool:
        """Whether ``event`` is of this watch's type and cluster (what its matcher checks
        first), so whether the feed must load its object for it."""
        scope = self._scope
        return (
            (scope.resource is None or scope.resource == event.resource)
            and (scope.group is None or scope.group == event.group)
            and (scope.version is None or scope.version == event.version)
            and (scope.cluster is None or scope.cluster == event.cluster)
        )

    def offer(self, event: ChangeEvent) -> None:
        """Called by the feed for every event, in rv order."""
        if self._expired is not None or event.rv <= self._backlog_end or not self._matcher(event):
            return
        if len(self._live) >= self._capacity:
            self.expire(f"the watcher fell more than {self._capacity} events behind")
            return
        self._live.append(event)
        self._ready.set()

    def expire(self, reason: str) -> None:
        self._expired = reason
        self._live.clear()
        self._ready.set()

    def end(self) -> None:
        self._ended = True
        self._ready.set()

    def _check(self) -> None:
        if self._ended:
            raise Ended()
        if self._expired is not None:
            raise Expired(self._expired)

    @property
    def caught_up(self) -> bool:
        return self._backlog_cursor >= self._backlog_end and not self._backlog

    def progress(self) -> int:
        """The rv up to which this watcher has been given every event it should see: what a
        BOOKMARK may announce."""
        if not self.caught_up or self._live:
            return self.last_rv
        return max(self.last_rv, self._feed.position)

    async def next(self, timeout: float | None) -> ChangeEvent | None:
        """The next event, or None after ``timeout`` seconds without one; raises
        :class:`Expired` or :class:`Ended`."""
        self._check()
        if not self.caught_up:
            if not self._backlog:
                await self._read_backlog()
            if self._backlog:
                return self._hand_out(self._backlog.popleft())
        if not self._live:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
        self._check()
        return self._hand_out(self._live.popleft()) if self._live else None

    def ready(self, limit: int) -> list[ChangeEvent]:
        """Up to ``limit`` more events available right now, without waiting (live ones only:
        the backlog is read by :meth:`next`)."""
        if not self.caught_up or self._expired is not None or self._ended:
            return []
        taken: list[ChangeEvent] = []
        while self._live and len(taken) < limit:
            taken.append(self._hand_out(self._live.popleft()))
        return taken

    def _hand_out(self, event: ChangeEvent) -> ChangeEvent:
        self.last_rv = event.rv
        return event

    async def _read_backlog(self) -> None:
        log = self._feed.log
        while not self._backlog and self._backlog_cursor < self._backlog_end:
            start = self._backlog_cursor
            events = await log.read(
                after=start,
                upto=self._backlog_end,
                limit=BACKLOG_PAGE,
                group=self._scope.group,
                version=self._scope.version,
                resource=self._scope.resource,
                cluster=self._scope.cluster,
            )
            # Pruning moves the mark before it deletes: a mark still at or below ``start``
            # after the read means nothing this read needed was gone.
            if (await log.marks()).pruned > start:
                self.expire(f"too old resource version: {start}")
                raise Expired(f"too old resource version: {start}")
            self._backlog_cursor = (
                events[-1].rv if len(events) == BACKLOG_PAGE else self._backlog_end
            )
            self._backlog.extend(e for e in events if self._matcher(e))

    def misses(self, upto: int) -> bool:
        """Whether this watcher needs events up to ``upto`` that only the feed would give it
        (events at or below its backlog's end come from the log, with its own pruning check)."""
        return self._backlog_end < upto

    def close(self) -> None:
        self._feed.unsubscribe(self)


class ChangeFeed:
    """Follows the change log from the head at start; see the module docstring."""

    def __init__(
        self,
        log: Changes,
        *,
        poll_interval: float,
        listen: bool = False,
    ):
        self.log = log
        self.poll_interval = poll_interval
        # Wake on the commits the storage announces (log.pushes), polling only as a fallback.
        self.listen = listen and log.pushes
        self.position = 0
        self._notified = 0  # the newest head a writer's NOTIFY named (commits are in rv order)
        self._subscriptions: set[Subscription] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def watchers(self) -> int:
        return len(self._subscriptions)

    async def start(self) -> None:
        self.position = (await self.log.marks()).head
        self._tasks.append(asyncio.create_task(self._follow(), name="change feed"))
        if self.listen:
            self._tasks.append(asyncio.create_task(self._listen(), name="change feed listener"))
        logger.info("change feed following the log from resourceVersion %d", self.position)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for subscription in list(self._subscriptions):
            subscription.end()

    def subscribe(
        self, matcher: EventMatcher, *, after: int, scope: Scope, capacity: int
    ) -> Subscription:
        subscription = Subscription(self, matcher, after=after, scope=scope, capacity=capacity)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def poke(self) -> None:
        """Read the log now instead of at the next poll."""
        self._wake.set()

    async def _follow(self) -> None:
        # While the log cannot be read, polls back off (to about 5 s); a wake still reads.
        retry = Backoff(self.poll_interval * 2, max(5.0, self.poll_interval))
        failures = 0
        while True:
            wait = self.poll_interval
            try:
                await self.read_new()
                failures = 0
                retry.reset()
            except Exception as error:  # the database is down: keep watchers, retry
                failures += 1
                wait = retry.next_delay()
                if failures == 1 or failures % 20 == 0:
                    logger.warning(
                        "change feed cannot read the log (%s); retrying in %.1fs", error, wait
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()

    async def read_new(self) -> None:
        """One pass of the loop that follows the log: offer every new event, then return."""
        while True:
            if not self._subscriptions:
                # Nobody to offer events to: move to the head without reading them. An initial
                # sync would otherwise send every object it stored straight back (15% of the
                # sync's CPU in our process, bench/sync.py --profile). A subscription made
                # during the read has the log give it its backlog, as any other.
                head = self._notified
                if head <= self.position:  # a poll, or a NOTIFY already taken
                    head = (await self.log.marks()).head
                if not self._subscriptions:
                    self.position = max(self.position, head)
                    return
            events = await self.log.read(after=self.position, limit=FEED_BATCH, objects=False)
            if not events:
                return
            if events[0].rv != self.position + 1:  # rvs are dense: the gap was pruned
                self._lost(events[0].rv - 1)
            subscriptions = await self._load_for_watchers(events)
            # No await from here to the position update: a subscription created meanwhile
            # sees either all of this batch live or all of it in its backlog.
            for event in events:
                if event.loaded:
                    for subscription in subscriptions:
                        subscription.offer(event)
            self.position = events[-1].rv
            if len(events) < FEED_BATCH:
                return

    async def _load_for_watchers(self, events: list[ChangeEvent]) -> list[Subscription]:
        """Load the objects of the events some watcher's type and cluster take, and only
        those: a watch of one cluster's Pods does not read every object a fleet changes.
        Returns the subscriptions the loaded events are for, taken after the last await."""
        gone: set[int] = set()
        while True:
            subscriptions = list(self._subscriptions)
            needed = [
                event
                for event in events
                if not event.loaded
                and event.rv not in gone
                and any(s.in_scope(event) for s in subscriptions)
            ]
            if not needed:
                return subscriptions
            for event in await self.log.load(needed):  # pruned under us: never expected
                gone.add(event.rv)
                for subscription in subscriptions:
                    if subscription.in_scope(event):
                        subscription.expire(f"too old resource version: {event.rv - 1}")

    def _lost(self, upto: int) -> None:
        """Events (position, upto] were pruned before this feed read them: the watchers that
        needed them must relist; one that started at or after ``upto`` lost nothing."""
        lost = [s for s in self._subscriptions if s.misses(upto)]
        logger.warning(
            "change log pruned past this server's position (%d -> %d); %d watchers must relist",
            self.position, upto, len(lost),
        )  # fmt: skip
        for subscription in lost:
            subscription.expire(f"too old resource version: {self.position}")
        self.position = upto

    async def _listen(self) -> None:
        """Wake the feed on each commit the storage announces (PostgreSQL's NOTIFY)."""
        async for head in self.log.notifications():
            if head is not None:
                self._notified = max(self._notified, head)
            self._wake.set()
