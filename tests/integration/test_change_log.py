"""The change log on SQLite, PostgreSQL and MariaDB: what the writer logs, global dense
resourceVersions under concurrent writers, pruning, and the feed that serves watchers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from clusterpedia.gvr import ResourceType
from clusterpedia.storage.changelog import ChangeEvent, ChangeLog, Marks
from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.migrate import ensure_schema
from clusterpedia.storage.query import Query, TypeFilter
from clusterpedia.storage.records import Delete
from clusterpedia.storage.writer import ResourceWriter
from clusterpedia.testing.objects import DEPLOYMENTS, PODS, make_object, upsert
from clusterpedia.testing.waiting import eventually_async
from clusterpedia.watch.feed import ChangeFeed, Expired, Scope
from clusterpedia.watch.matcher import EventMatcher, event_matcher


@pytest.fixture
async def log_and_writer(database_url: str) -> AsyncIterator[tuple[ChangeLog, ResourceWriter]]:
    engine = create_engine(database_url)
    try:
        await ensure_schema(engine)
        yield ChangeLog(engine), ResourceWriter(engine)
    finally:
        await engine.dispose()


def pods_of(cluster: str) -> tuple[EventMatcher, Scope]:
    """What a watch of one cluster's Pods subscribes with."""
    query = Query(types=(TypeFilter("", "v1", "pods"),), clusters=(cluster,))
    return event_matcher(query), Scope("", "v1", "pods", cluster)


def served_rv(event: ChangeEvent) -> int:
    return int(orjson.loads(event.object)["metadata"]["resourceVersion"])


async def test_each_real_change_is_logged_once_with_its_served_object(
    log_and_writer: tuple[ChangeLog, ResourceWriter],
) -> None:
    log, writer = log_and_writer
    start = (await log.marks()).head
    pods = [make_object(PODS, name=f"log-{i}", cluster="logc", rv="1") for i in range(3)]
    assert await writer.apply(cluster="logc", rtype=PODS, changes=[upsert(p) for p in pods]) == 3
    # The same member resourceVersion again: nothing changed, nothing logged.
    assert await writer.apply(cluster="logc", rtype=PODS, changes=[upsert(pods[0])]) == 0
    changed = make_object(PODS, name="log-1", cluster="logc", rv="2", labels={"tier": "x"})
    await writer.apply(cluster="logc", rtype=PODS, changes=[upsert(changed)])
    # A delete of an object never stored is not a change.
    await writer.apply(
        cluster="logc", rtype=PODS, changes=[Delete("default", "log-1"), Delete("default", "nope")]
    )
    events = await log.read(after=start)
    assert [(e.rv - start, e.type, e.name) for e in events] == [
        (1, "ADDED", "log-0"),
        (2, "ADDED", "log-1"),
        (3, "ADDED", "log-2"),
        (4, "MODIFIED", "log-1"),
        (5, "DELETED", "log-1"),
    ]
    assert (await log.marks()).head == start + 5
    for event in events:
        assert served_rv(event) == event.rv  # the object carries the global resourceVersion
        assert (event.cluster, event.group, event.version, event.resource) == (
            "logc", "", "v1", "pods",
        )  # fmt: skip
    # DELETED carries the last state: the labels of the MODIFIED version.
    deleted = events[-1]
    assert deleted.labels == {"tier": "x"}
    assert deleted.parsed["metadata"]["labels"] == {"tier": "x"}
    # Removing the cluster logs a DELETED for each remaining object.
    before = (await log.marks()).head
    assert await writer.delete_cluster("logc") == 2
    gone = await log.read(after=before)
    assert sorted((e.type, e.name) for e in gone) == [("DELETED", "log-0"), ("DELETED", "log-2")]


async def test_concurrent_writers_get_dense_ordered_resource_versions(
    log_and_writer: tuple[ChangeLog, ResourceWriter],
) -> None:
    log, writer = log_and_writer
    start = (await log.marks()).head

    async def write(cluster: str, rtype: ResourceType) -> None:
        for batch in range(8):
            objects = [
                make_object(rtype, name=f"{batch}-{i}", cluster=cluster, rv=str(batch))
                for i in range(5)
            ]
            await writer.apply(cluster=cluster, rtype=rtype, changes=[upsert(o) for o in objects])

    await asyncio.gather(
        *(write(f"dense-{n}", rtype) for n in range(3) for rtype in (PODS, DEPLOYMENTS))
    )
    events = await log.read(after=start, limit=10_000)
    assert [e.rv for e in events] == list(range(start + 1, start + 1 + 3 * 2 * 8 * 5))
    assert all(served_rv(e) == e.rv for e in events)
    for n in range(3):
        await writer.delete_cluster(f"dense-{n}")


async def test_pruning_moves_the_mark_and_keeps_the_newest(
    log_and_writer: tuple[ChangeLog, ResourceWriter],
) -> None:
    log, writer = log_and_writer
    objects = [make_object(PODS, name=f"prune-{i}", cluster="prunec") for i in range(20)]
    await writer.apply(cluster="prunec", rtype=PODS, changes=[upsert(o) for o in objects])
    head = (await log.marks()).head
    await log.prune(max_age=None, max_events=5)
    marks = await log.marks()
    assert marks.pruned == head - 5
    remaining = await log.read(after=0, limit=10_000)
    assert [e.rv for e in remaining] == list(range(head - 4, head + 1))
    await writer.delete_cluster("prunec")


async def _next_events(subscription: object, count: int) -> list[ChangeEvent]:
    events = []
    while len(events) < count:
        event = await subscription.next(10)  # type: ignore[attr-defined]
        assert event is not None, f"only {len(events)} of {count} events arrived"
        events.append(event)
    return events


async def test_feed_serves_live_events_backlog_and_expiry(
    log_and_writer: tuple[ChangeLog, ResourceWriter],
) -> None:
    log, writer = log_and_writer
    feed = ChangeFeed(log, poll_interval=0.05)
    await feed.start()
    try:
        start = feed.position
        pods_of_feedc = event_matcher(
            Query(types=(TypeFilter("", "v1", "pods"),), clusters=("feedc",))
        )
        scope = Scope("", "v1", "pods", "feedc")
        live = feed.subscribe(pods_of_feedc, after=start, scope=scope, capacity=100)
        await writer.apply(
            cluster="feedc",
            rtype=PODS,
            changes=[upsert(make_object(PODS, name=f"f{i}", cluster="feedc")) for i in range(3)],
        )
        # Other clusters and types are filtered out.
        await writer.apply(
            cluster="other", rtype=PODS, changes=[upsert(make_object(PODS, name="x"))]
        )
        await writer.apply(
            cluster="feedc", rtype=DEPLOYMENTS, changes=[upsert(make_object(DEPLOYMENTS, name="d"))]
        )
        await writer.apply(cluster="feedc", rtype=PODS, changes=[Delete("default", "f0")])
        got = await _next_events(live, 4)
        assert [(e.type, e.name) for e in got] == [
            ("ADDED", "f0"), ("ADDED", "f1"), ("ADDED", "f2"), ("DELETED", "f0"),
        ]  # fmt: skip
        assert await live.next(0.3) is None
        live.close()

        # From an older resourceVersion: the backlog first, then live events, each once.
        for _ in range(50):
            if feed.position >= got[-1].rv:
                break
            await asyncio.sleep(0.05)
        late = feed.subscribe(pods_of_feedc, after=got[0].rv, scope=scope, capacity=100)
        await writer.apply(
            cluster="feedc", rtype=PODS, changes=[upsert(make_object(PODS, name="f9"))]
        )
        resumed = await _next_events(late, 4)
        assert [e.name for e in resumed] == ["f1", "f2", "f0", "f9"]
        assert late.progress() >= resumed[-1].rv
        late.close()

        # A watcher that falls behind its capacity is cut, not buffered.
        slow = feed.subscribe(pods_of_feedc, after=feed.position, scope=scope, capacity=2)
        await writer.apply(
            cluster="feedc",
            rtype=PODS,
            changes=[upsert(make_object(PODS, name=f"s{i}", cluster="feedc")) for i in range(5)],
        )
        with pytest.raises(Expired, match="behind"):
            for _ in range(50):
                await slow.next(0.1)
        slow.close()

        # From a pruned resourceVersion: 410.
        await log.prune(max_age=None, max_events=1)
        old = feed.subscribe(pods_of_feedc, after=start, scope=scope, capacity=100)
        with pytest.raises(Expired, match="too old"):
            await old.next(1)
        old.close()
        assert feed.watchers == 0
    finally:
        await feed.stop()
        for cluster in ("feedc", "other"):
            await writer.delete_cluster(cluster)


async def test_pruning_past_the_feed_cuts_only_the_watchers_that_miss_events(
    log_and_writer: tuple[ChangeLog, ResourceWriter],
) -> None:
    """The feed's position falls behind, the log is pruned past it: a watcher that needed the
    pruned events gets 410, one that started after them (a relist's resourceVersion) does not.
    Once a flake of test_watch_api (the feed had not read the last puts when the test pruned);
    here the feed's bounded pass is driven by hand."""
    log, writer = log_and_writer
    feed = ChangeFeed(log, poll_interval=60)
    feed.position = (await log.marks()).head
    pods, scope = pods_of("prunec")
    behind = feed.subscribe(pods, after=feed.position, scope=scope, capacity=100)
    try:
        for i in range(5):
            await writer.apply(
                cluster="prunec", rtype=PODS, changes=[upsert(make_object(PODS, name=f"p{i}"))]
            )
        await log.prune(max_age=None, max_events=2)
        head = (await log.marks()).head
        relisted = feed.subscribe(pods, after=head, scope=scope, capacity=100)
        await writer.apply(
            cluster="prunec", rtype=PODS, changes=[upsert(make_object(PODS, name="after"))]
        )
        await feed.read_new()
        with pytest.raises(Expired, match="too old"):
            await behind.next(0.1)
        event = await relisted.next(1)
        assert event is not None and event.name == "after"
        assert feed.position == head + 1
    finally:
        behind.close()
        relisted.close()
        await writer.delete_cluster("prunec")


class CountingLog(ChangeLog):
    """The real log, counting the events it reads, the objects it loads and its reads of the
    marks."""

    events_read = 0
    objects_loaded = 0
    marks_read = 0

    async def marks(self) -> Marks:
        self.marks_read += 1
        return await super().marks()

    async def read(self, **kwargs: Any) -> list[ChangeEvent]:
        events = await super().read(**kwargs)
        self.events_read += len(events)
        return events

    async def load(self, events: list[ChangeEvent]) -> list[ChangeEvent]:
        gone = await super().load(events)
        self.objects_loaded += len(events) - len(gone)
        return gone


async def test_a_feed_without_watchers_moves_on_without_reading_events(
    log_and_writer: tuple[ChangeLog, ResourceWriter],
) -> None:
    """Nobody watches: the feed takes the head and reads nothing (an initial sync would send
    every stored object back). A watcher that comes later still gets its backlog from the log,
    and new events live."""
    log, writer = log_and_writer
    counting = CountingLog(log.engine)
    feed = ChangeFeed(counting, poll_interval=60)
    feed.position = (await log.marks()).head
    pods, scope = pods_of("idlec")
    start = feed.position
    try:
        await writer.apply(
            cluster="idlec",
            rtype=PODS,
            changes=[upsert(make_object(PODS, name=f"p{i}", cluster="idlec")) for i in range(5)],
        )
        await feed.read_new()
        assert feed.position == start + 5
        assert counting.events_read == 0
        late = feed.subscribe(pods, after=start + 2, scope=scope, capacity=100)
        await writer.apply(
            cluster="idlec", rtype=PODS, changes=[upsert(make_object(PODS, name="live"))]
        )
        await feed.read_new()
        names = []
        while (event := await late.next(0.1)) is not None:
            names.append(event.name)
        assert names == ["p2", "p3", "p4", "live"]
    finally:
        late.close()
        await writer.delete_cluster("idlec")


async def test_the_feed_loads_only_the_objects_its_watchers_take(
    log_and_writer: tuple[ChangeLog, ResourceWriter],
) -> None:
    """A watch of one cluster's Pods while Deployments and another cluster's Pods change: the
    feed reads every event, but loads only the objects of those Pods."""
    log, writer = log_and_writer
    counting = CountingLog(log.engine)
    feed = ChangeFeed(counting, poll_interval=60)
    feed.position = (await log.marks()).head
    pods, scope = pods_of("selc")
    watcher = feed.subscribe(pods, after=feed.position, scope=scope, capacity=100)
    try:
        deployments = [upsert(make_object(DEPLOYMENTS, name=f"d{i}")) for i in range(5)]
        await writer.apply(cluster="selc", rtype=DEPLOYMENTS, changes=deployments)
        others = [upsert(make_object(PODS, name=f"o{i}")) for i in range(3)]
        await writer.apply(cluster="otherc", rtype=PODS, changes=others)
        mine = [upsert(make_object(PODS, name=f"p{i}")) for i in range(2)]
        await writer.apply(cluster="selc", rtype=PODS, changes=mine)
        await feed.read_new()
        got = []
        while (event := await watcher.next(0.1)) is not None:
            got.append((event.name, orjson.loads(event.object)["metadata"]["name"]))
        assert got == [("p0", "p0"), ("p1", "p1")]
        assert counting.objects_loaded == 2
        assert counting.events_read == 10
    finally:
        watcher.close()
        for cluster in ("selc", "otherc"):
            await writer.delete_cluster(cluster)


SELECTORS = [
    {"labelSelector": "app=web"},
    {"labelSelector": "app notin (web),tier"},
    {"labelSelector": "!tier,n>2"},
    {"fieldSelector": "spec.nodeName=n1"},
    {"fieldSelector": "spec.containers[].image=nginx,spec.nodeName!=n2"},
    {"fieldSelector": "status.phase!=Running"},
    {"names": "m0,m3", "namespaces": "default"},
    {"labelSelector": "internalstorage.clusterpedia.io/fuzzy-name=m1"},
    {"since": "2024-03-02T00:00:00Z"},
]


@pytest.mark.parametrize("params", SELECTORS, ids=[str(p) for p in SELECTORS])
async def test_watch_filters_select_what_the_list_query_selects(
    log_and_writer: tuple[ChangeLog, ResourceWriter], database_url: str, params: dict[str, str]
) -> None:
    """The matcher (Python, per event) and the compiler (SQL, per row) agree."""
    from clusterpedia.search.params import query_from_request
    from clusterpedia.storage.reader import ResourceReader

    log, writer = log_and_writer
    start = (await log.marks()).head
    objects = []
    for i in range(8):
        labels = {"app": ("web", "db")[i % 2], "n": str(i)}
        if i % 3 == 0:
            labels["tier"] = "front"
        obj = make_object(
            PODS,
            name=f"m{i}",
            cluster="matchc",
            labels=labels,
            created=f"2024-03-0{1 + i % 3}T10:00:00Z",
            spec={"nodeName": f"n{i % 3}", "containers": [{"image": ("nginx", "redis")[i % 2]}]},
            status={"phase": ("Running", "Pending")[i % 2]} if i != 5 else None,
        )
        objects.append(upsert(obj))
    await writer.apply(cluster="matchc", rtype=PODS, changes=objects)
    query = query_from_request(
        {k: [v] for k, v in params.items()},
        types=(TypeFilter("", "v1", "pods"),),
        cluster="matchc",
    )
    reader = ResourceReader(log.engine)
    try:
        listed = {
            orjson.loads(i.data)["metadata"]["name"] for i in (await reader.list(query)).items
        }
    finally:
        await reader.close()
    matcher = event_matcher(query)
    watched = {e.name for e in await log.read(after=start, cluster="matchc") if matcher(e)}
    await writer.delete_cluster("matchc")
    assert watched == listed


async def test_postgres_commits_wake_the_feed_at_once(
    log_and_writer: tuple[ChangeLog, ResourceWriter],
) -> None:
    """The NOTIFY sent with the resourceVersion allocation reaches the feed at commit: with a
    poll a minute apart, the events arrive within seconds only if it does. (The feed reads once
    at start and once when LISTEN is in place, so at least the third batch needs the NOTIFY.)"""
    log, writer = log_and_writer
    if log.engine.dialect.name != "postgresql":
        pytest.skip("NOTIFY/LISTEN is PostgreSQL's")
    counting = CountingLog(log.engine)
    feed = ChangeFeed(counting, poll_interval=60, listen=True)
    await feed.start()
    pods, scope = pods_of("wakec")
    live = feed.subscribe(pods, after=feed.position, scope=scope, capacity=100)
    try:
        for batch in range(3):
            await writer.apply(
                cluster="wakec",
                rtype=PODS,
                changes=[upsert(make_object(PODS, name=f"w{batch}", cluster="wakec"))],
            )
            event = await live.next(5)
            assert event is not None and event.name == f"w{batch}"
        live.close()
        # Without watchers, the NOTIFY's head moves the feed: no query at all.
        marks_before = counting.marks_read
        for batch in range(3):
            await writer.apply(
                cluster="wakec",
                rtype=PODS,
                changes=[upsert(make_object(PODS, name=f"idle{batch}", cluster="wakec"))],
            )
            head = (await log.marks()).head
            await eventually_async(
                lambda head=head: feed.position == head, timeout=5, interval=0.02
            )
        assert counting.marks_read == marks_before
        assert counting.events_read == 3
    finally:
        live.close()
        await feed.stop()
        await writer.delete_cluster("wakec")
