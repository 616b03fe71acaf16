"""One asyncio task per (cluster, resource type): list, then watch, forever.

The algorithm of client-go's Reflector (``k8s.io/client-go/tools/cache/reflector.go``),
storing instead of caching:

1. seed the ``namespace/name -> resourceVersion`` map of this type from the database, so a
   restart writes only what changed and deletes what disappeared while we were away;
2. list page by page; store objects whose resourceVersion differs from the seed; delete rows
   the list no longer has;
3. watch from the list's resourceVersion with bookmarks and a randomised timeout; events go to
   the storage in batches bounded by size and time;
4. a watch that ends is resumed from the last resourceVersion seen; 410 Gone means relist.

Failures never end the task: member errors (including answers that are not valid JSON, and
watches that go silent) back off and retry; when the database keeps failing the watch stops and
resumes with a relist, so nothing is lost. Objects larger than ``max_object_bytes`` are not
stored, and the status names them. Only keys and resourceVersions are held in memory, never
objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from clusterpedia.backoff import Backoff
from clusterpedia.kube.client import (
    REQUEST_TIMEOUT,
    WATCH_IDLE_TIMEOUT,
    KubeClient,
    KubeError,
    ResourceExpired,
)
from clusterpedia.storage import Change, Delete, ObjectWrites, StorageError, Upsert
from clusterpedia.sync import metrics
from clusterpedia.sync.objects import object_key, prepare
from clusterpedia.sync.targets import SyncTarget

logger = logging.getLogger(__name__)


@dataclass
class SyncSettings:
    """Tuning of the sync workers (one object, passed down)."""

    page_size: int = 500
    batch_size: int = 500
    # Seconds an event may wait for company before it is stored. Shorter than it was (0.25),
    # because the writer's group commit joins the batches of all workers anyway; shorter still
    # costs CPU per event (bench/sync.py, one member at 200 changes/s, ours/database: 645/155 us
    # at 0.25 s, 845/215 us at 0.05 s; watch lag p50 195 and 127 ms).
    batch_interval: float = 0.1
    watch_timeout: tuple[int, int] = (240, 420)  # randomised, as client-go does
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    store_secret_data: bool = False  # keep the values of Secrets (off: see sync/objects.py)
    request_timeout: float = REQUEST_TIMEOUT  # one member request (a list page, a probe)
    watch_idle_timeout: float = WATCH_IDLE_TIMEOUT  # a watch this silent is hung
    # Larger objects are not stored (kube-apiserver itself refuses bodies over 3 MiB; a bigger
    # one is a broken member, and one row must not fail every batch it is in).
    max_object_bytes: int = 8 * 1024 * 1024
    # Politeness to each member: requests per second and at once (the original's
    # --kube-api-qps / --kube-api-burst; watch streams count once, when opened), and lists
    # running at the same time (a member with 300 types must not get 300 lists at once).
    kube_api_qps: float = 50.0
    kube_api_burst: int = 100
    list_concurrency: int = 4
    # Lists running at once in the whole process: each holds a few pages of parsed objects
    # (~15 MB per page of 500 Pods), so this, not the number of members, bounds the memory
    # of an initial sync (bench/fleet.py: 4 members x 4 lists held 358 MB; one list each 176).
    process_list_concurrency: int = 4


@dataclass
class ResourceStatus:
    """Progress of one resource type, reported in PediaCluster.status."""

    phase: str = "Pending"  # Pending | Syncing | Error | Stop
    reason: str = ""
    message: str = ""
    initial_list_phase: bool = True
    count: int = 0
    last_event_time: float | None = None
    watch_restarts: int = 0
    too_large: dict[str, int] = field(default_factory=dict)  # key -> bytes, not stored

    def condition(self) -> tuple[str, str, str]:
        """(status, reason, message) for PediaCluster.status."""
        if self.phase == "Syncing" and self.too_large:
            names = ", ".join(
                f"{key} ({size} bytes)" for key, size in list(self.too_large.items())[:5]
            )
            return (
                "Syncing",
                "ObjectsTooLarge",
                f"{len(self.too_large)} object(s) over the size limit are not stored: {names}",
            )
        return self.phase, self.reason, self.message


_STOP = object()


class _WatchBatch:
    """A watch's changes waiting to be stored: due when full, or ``interval`` seconds after
    the first of them arrived (changes come in bursts; one write takes a burst)."""

    def __init__(self, size: int, interval: float):
        self.size, self.interval = size, interval
        self.changes: list[Change] = []
        self.received = 0.0  # when the first change arrived

    def add(self, change: Change) -> None:
        if not self.changes:
            self.received = time.monotonic()
        self.changes.append(change)

    def due(self) -> bool:
        return len(self.changes) >= self.size or (
            bool(self.changes) and time.monotonic() >= self.received + self.interval
        )

    def wait(self) -> float | None:
        """How long the next event may be waited for before the batch is due (None: no
        batch, wait as long as it takes)."""
        if not self.changes:
            return None
        return max(0.0, self.received + self.interval - time.monotonic())

    def take(self) -> tuple[list[Change], float]:
        changes, self.changes = self.changes, []
        return changes, self.received


async def _next_item(queue: asyncio.Queue[Any], timeout: float | None) -> Any:
    """The next item of a watch's queue, None when ``timeout`` passes first. Events come in
    bursts: what is there is taken without wait_for's task and timer, which cost more than the
    rest of an event's handling."""
    try:
        return queue.get_nowait()
    except asyncio.QueueEmpty:
        try:
            return await asyncio.wait_for(queue.get(), timeout=timeout)
        except TimeoutError:
            return None


T = TypeVar("T")


async def _prefetched(pages: AsyncIterator[T]) -> AsyncIterator[T]:
    """Yield from ``pages`` while already fetching the next item, so the member's next list
    page travels while the storage writes the current one."""
    iterator = aiter(pages)
    pending = asyncio.ensure_future(anext(iterator, _STOP))
    try:
        while (item := await pending) is not _STOP:
            pending = asyncio.ensure_future(anext(iterator, _STOP))
            yield item  # type: ignore[misc]
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)


class ResourceSyncer:
    """Keeps the stored rows of one resource type of one member equal to the member's."""

    def __init__(
        self,
        *,
        cluster: str,
        target: SyncTarget,
        client: KubeClient,
        writer: ObjectWrites,
        settings: SyncSettings | None = None,
        list_slots: Sequence[asyncio.Semaphore] = (),
    ):
        self.cluster = cluster
        self.target = target
        self.client = client
        self.writer = writer
        self.settings = settings or SyncSettings()
        # A relist takes one slot of each: the member's (shared by its workers) and the
        # process's (shared by every member), in that order.
        self.list_slots = tuple(list_slots) or (asyncio.Semaphore(self.settings.list_concurrency),)
        self.status = ResourceStatus()
        self._labels = (cluster, str(target.rtype))

    @property
    def _params(self) -> dict[str, str]:
        params = {}
        if self.target.label_selector:
            params["labelSelector"] = self.target.label_selector
        if self.target.member_field_selector:
            params["fieldSelector"] = self.target.member_field_selector
        return params

    def _mark(self, phase: str, reason: str = "", message: str = "") -> None:
        self.status.phase, self.status.reason, self.status.message = phase, reason, message

    async def run(self, *, resource_version: str | None = None) -> None:
        """List and watch until cancelled (resuming the watch at ``resource_version`` if given)."""
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        while True:
            try:
                if resource_version is None:
                    async with contextlib.AsyncExitStack() as slots:
                        for slot in self.list_slots:
                            await slots.enter_async_context(slot)
                        resource_version = await self.relist()
                    backoff.reset()
                resource_version = await self.watch_once(resource_version)
            except ResourceExpired:
                logger.info(
                    "%s/%s: resourceVersion expired; relisting", self.cluster, self.target.rtype
                )
                self.status.watch_restarts += 1
                metrics.WATCH_RESTARTS.labels(*self._labels).inc()
                resource_version = None
            except KubeError as error:
                self._mark("Error", "ResourceWatchFailed", str(error))
                metrics.ERRORS.labels(*self._labels, "member").inc()
                metrics.WATCH_RESTARTS.labels(*self._labels).inc()
                delay = backoff.next_delay(error.retry_after)
                logger.warning(
                    "%s/%s: %s; retrying in %.0fs", self.cluster, self.target.rtype, error, delay
                )
                await asyncio.sleep(delay)
                self.status.watch_restarts += 1
            except StorageError as error:
                # The writer already retried; pause, then relist so nothing is lost.
                self._mark("Error", "StorageExpection", str(error))
                metrics.ERRORS.labels(*self._labels, "storage").inc()
                logger.warning(
                    "%s/%s: storage failing (%s); pausing", self.cluster, self.target.rtype, error
                )
                await backoff.wait()
                resource_version = None
            except Exception as error:
                # A bug must not end the worker silently: say so, then start over with a relist.
                self._mark("Error", "InternalError", f"{type(error).__name__}: {error}")
                metrics.ERRORS.labels(*self._labels, "internal").inc()
                logger.exception(
                    "%s/%s: unexpected failure; relisting", self.cluster, self.target.rtype
                )
                await backoff.wait()
                resource_version = None

    async def relist(self) -> str:
        """Make the stored rows equal to a fresh list; return the list's resourceVersion."""
        rtype = self.target.rtype
        known = await self.writer.resource_versions(cluster=self.cluster, rtype=rtype)
        seen: set[str] = set()
        list_rv = ""
        self._mark("Syncing" if not self.status.initial_list_phase else "Pending", "", "listing")
        # Three stages overlap: the member sends page N+2 (prefetch), this task prepares page
        # N+1, the database stores page N. At most one batch is in flight, so memory stays
        # bounded by a few pages whatever the list size.
        storing: asyncio.Task[None] | None = None
        try:
            async for items, page_rv in _prefetched(
                self.client.list_pages(
                    self.target.path, params=self._params, limit=self.settings.page_size
                )
            ):
                list_rv = list_rv or page_rv
                changes: list[Change] = []
                for obj in items:
                    if not self.target.admits(obj):
                        continue  # not stored: a stored copy goes with the relist's deletes
                    namespace, name = object_key(obj)
                    key = f"{namespace}/{name}" if namespace else name
                    seen.add(key)
                    rv = (obj.get("metadata") or {}).get("resourceVersion", "")
                    stored_rv = known.get(key)
                    if stored_rv != rv:
                        changes.append(self._prepare(obj, is_new=stored_rv is None))
                del items
                if changes:
                    if storing is not None:
                        await storing
                    storing = asyncio.create_task(self._store(changes, origin="RELIST"))
                self.status.count = len(seen)
            if storing is not None:
                await storing
        finally:
            if storing is not None and not storing.done():
                storing.cancel()
                await asyncio.gather(storing, return_exceptions=True)
        gone: list[Change] = [
            Delete(*(key.split("/", 1) if "/" in key else ("", key))) for key in known.keys() - seen
        ]
        for start in range(0, len(gone), self.settings.batch_size):
            await self._store(
                gone[start : start + self.settings.batch_size], origin="RELIST_DELETE"
            )
        self.status.count = len(seen)
        for key in self.status.too_large.keys() - seen:
            del self.status.too_large[key]  # gone from the member meanwhile
        self.status.initial_list_phase = False
        self.status.last_event_time = time.time()
        self._mark("Syncing")
        logger.info(
            "%s/%s: listed %d objects (%d deleted since last sync) at resourceVersion %s",
            self.cluster, rtype, len(seen), len(gone), list_rv,
        )  # fmt: skip
        return list_rv

    async def watch_once(self, resource_version: str) -> str:
        """Watch until the member ends the stream; return the last resourceVersion seen."""
        low, high = self.settings.watch_timeout
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=self.settings.batch_size * 4)

        def opened() -> None:
            if self.status.phase == "Error":  # the member answers again
                self._mark("Syncing")

        async def produce() -> None:
            try:
                async for event in self.client.watch(
                    self.target.path,
                    resource_version=resource_version,
                    params=self._params,
                    timeout_seconds=random.randint(low, high),
                    opened=opened,
                ):
                    await queue.put(event)
                await queue.put(_STOP)
            except BaseException as error:  # handed to the consumer, which re-raises it
                await queue.put(error)

        producer = asyncio.create_task(produce(), name=f"watch {self.cluster}/{self.target.rtype}")
        batch = _WatchBatch(self.settings.batch_size, self.settings.batch_interval)
        last_rv = resource_version
        try:
            while True:
                item = await _next_item(queue, batch.wait())
                ended = item is _STOP or isinstance(item, BaseException)
                if item is not None and not ended:
                    last_rv = self._take(item, batch, last_rv)
                if batch.changes and (item is None or ended or batch.due()):
                    await self._flush(batch)
                if item is _STOP:
                    return last_rv
                if isinstance(item, BaseException):
                    raise item
        finally:
            producer.cancel()

    def _take(self, event: Any, batch: _WatchBatch, last_rv: str) -> str:
        """One watch event into ``batch`` (a BOOKMARK only moves the resourceVersion on);
        the resourceVersion the watch has now reached."""
        if event.type != "BOOKMARK":
            batch.add(self._change(event.type, event.object))
            self._count(event.type)
        return str((event.object.get("metadata") or {}).get("resourceVersion", last_rv))

    async def _flush(self, batch: _WatchBatch) -> None:
        """Store a watch's batch; how long its first change waited is the event lag."""
        changes, received = batch.take()
        await self._store(changes, origin="WATCH")
        metrics.EVENT_LAG.labels(*self._labels).observe(time.monotonic() - received)
        self.status.last_event_time = time.time()

    async def _store(self, changes: list[Change], *, origin: str) -> None:
        started = time.monotonic()
        await self.writer.apply(cluster=self.cluster, rtype=self.target.rtype, changes=changes)
        metrics.BATCH_SECONDS.labels(*self._labels).observe(time.monotonic() - started)
        metrics.BATCH_SIZE.labels(*self._labels).observe(len(changes))
        metrics.EVENTS.labels(*self._labels, origin).inc(len(changes))

    def _change(self, kind: str, obj: dict[str, Any]) -> Change:
        if kind == "DELETED" or not self.target.admits(obj):
            namespace, name = object_key(obj)
            self.status.too_large.pop(f"{namespace}/{name}" if namespace else name, None)
            return Delete(namespace, name)
        return self._prepare(obj)

    def _prepare(self, obj: dict[str, Any], *, is_new: bool = False) -> Change:
        """The row to store for ``obj``; an object over the size limit is removed instead (a
        stale copy would claim a state the member no longer has) and named in the status."""
        upsert: Upsert = prepare(
            obj,
            cluster=self.cluster,
            rtype=self.target.rtype,
            is_new=is_new,
            keep_secret_data=self.settings.store_secret_data,
        )
        key = f"{upsert.namespace}/{upsert.name}" if upsert.namespace else upsert.name
        if len(upsert.object) <= self.settings.max_object_bytes:
            self.status.too_large.pop(key, None)
            return upsert
        if key not in self.status.too_large:
            logger.warning(
                "%s/%s: %s is %d bytes, over the limit of %d; not stored",
                self.cluster, self.target.rtype, key, len(upsert.object),
                self.settings.max_object_bytes,
            )  # fmt: skip
        self.status.too_large[key] = len(upsert.object)
        return Delete(upsert.namespace, upsert.name)

    def _count(self, kind: str) -> None:
        if kind == "ADDED":
            self.status.count += 1
        elif kind == "DELETED":
            self.status.count = max(0, self.status.count - 1)
