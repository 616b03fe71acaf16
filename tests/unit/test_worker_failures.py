"""A worker survives what it does not expect: small fakes of the member and the storage (the
real ones are in tests/integration/test_member_faults.py), to reach the paths no real member
takes on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from clusterpedia.gvr import ResourceType
from clusterpedia.kube.access import access_from_spec
from clusterpedia.kube.client import KubeError
from clusterpedia.storage.records import Change
from clusterpedia.sync.cluster_synchro import ClusterSettings, ClusterSynchro
from clusterpedia.sync.targets import SyncTarget
from clusterpedia.sync.worker import ResourceSyncer, SyncSettings
from clusterpedia.testing.waiting import eventually_async

CONFIGMAPS = ResourceType("", "v1", "configmaps", "ConfigMap")


class FlakyMember:
    """Its first list fails with a bug-like exception; later ones list one object, and its
    watches stay open with nothing to say."""

    def __init__(self) -> None:
        self.lists = 0

    async def list_pages(self, path: str, **_: Any) -> AsyncIterator[tuple[list[Any], str]]:
        self.lists += 1
        if self.lists == 1:
            raise ZeroDivisionError("a bug")
        yield [{"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "5"}}], "5"

    async def watch(self, path: str, **_: Any) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield  # an async generator


class Storage:
    def __init__(self) -> None:
        self.applied: list[Change] = []

    async def resource_versions(self, **_: Any) -> dict[str, str]:
        return {}

    async def apply(self, *, changes: Sequence[Change], **_: Any) -> int:
        self.applied += changes
        return len(changes)


class Catalog:
    def __init__(self) -> None:
        self.health: dict[str, tuple[bool, str]] = {}

    async def set_health(self, cluster: str, *, healthy: bool, reason: str) -> None:
        self.health[cluster] = (healthy, reason)

    async def replace(self, cluster: str, types: Sequence[Any]) -> None:
        pass

    async def forget(self, cluster: str, *, rtype: Any = None) -> None:
        pass


async def test_an_unexpected_exception_is_reported_and_followed_by_a_relist() -> None:
    member, storage = FlakyMember(), Storage()
    syncer = ResourceSyncer(
        cluster="c",
        target=SyncTarget(CONFIGMAPS, True),
        client=member,  # type: ignore[arg-type]
        writer=storage,  # type: ignore[arg-type]
        settings=SyncSettings(backoff_initial=0.5),
    )
    task = asyncio.create_task(syncer.run())
    try:
        await eventually_async(lambda: syncer.status.phase == "Error", timeout=5, interval=0.01)
        assert syncer.status.reason == "InternalError"
        assert "ZeroDivisionError: a bug" in syncer.status.message
        await eventually_async(lambda: syncer.status.phase == "Syncing", timeout=5)
        assert member.lists == 2 and [c.name for c in storage.applied] == ["a"]
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class OddMember:
    """Its first health probe fails with what no member failure raises (aiohttp's ValueError
    for a header it refuses); then it is healthy, with a discovery that fails as members do."""

    def __init__(self) -> None:
        self.probes = 0
        self.open_watches = self.requests_in_flight = 0

    async def get_text(self, path: str, **_: Any) -> tuple[int, str]:
        self.probes += 1
        if self.probes == 1:
            raise ValueError("Newline or carriage return character detected in HTTP header")
        return 200, "ok"

    async def get(self, path: str, **_: Any) -> Any:
        if path == "/version":
            return {"gitVersion": "v1.35.4"}
        raise KubeError(f"GET {path}: 503 unavailable", status=503)

    async def close(self) -> None:
        pass


async def test_an_unexpected_exception_in_the_cluster_loop_is_reported_and_survived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reports: list[dict[str, Any]] = []

    async def report(status: dict[str, Any]) -> None:
        reports.append(status)

    synchro = ClusterSynchro(
        name="odd",
        access=access_from_spec({"apiserver": "https://10.0.0.1", "tokenData": "dA=="}),
        sync_resources=[],
        writer=Storage(),  # type: ignore[arg-type]
        catalog=Catalog(),  # type: ignore[arg-type]
        report=report,
        cluster_settings=ClusterSettings(probe_interval=0.05, status_interval=0.01),
        client=OddMember(),  # type: ignore[arg-type]
    )
    synchro.start()
    try:

        def running(status: dict[str, Any]) -> dict[str, str]:
            return next(c for c in status["conditions"] if c["type"] == "SynchroRunning")

        await eventually_async(
            lambda: any(running(r)["reason"] == "InternalError" for r in reports), timeout=5
        )
        failed = next(r for r in reports if running(r)["reason"] == "InternalError")
        assert "ValueError: Newline or carriage return" in running(failed)["message"]
        assert "odd: its sync loop failed" in caplog.text
        await eventually_async(lambda: synchro.healthy is True, timeout=5)
        assert synchro._task is not None and not synchro._task.done()
        assert running(synchro.status())["reason"] != "InternalError"
    finally:
        await synchro.stop()


class SlowLister:
    """Lists that take their time, counted while they run (shared by several members)."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.done = 0

    async def list_pages(self, path: str, **_: Any) -> AsyncIterator[tuple[list[Any], str]]:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.05)
            yield [], "1"
        finally:
            self.running -= 1
            self.done += 1

    async def watch(self, path: str, **_: Any) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield


async def test_lists_wait_for_a_slot_of_their_member_and_of_the_process() -> None:
    """Three members of four types each, at most 2 lists per member and 3 in the process: 3
    run at once, never more, and all 12 finish."""
    lister, storage = SlowLister(), Storage()
    process = asyncio.Semaphore(3)
    tasks = []
    for member in range(3):
        own = asyncio.Semaphore(2)
        for index in range(4):
            rtype = ResourceType("", "v1", f"things{index}", "Thing")
            syncer = ResourceSyncer(
                cluster=f"m{member}",
                target=SyncTarget(rtype, True),
                client=lister,  # type: ignore[arg-type]
                writer=storage,  # type: ignore[arg-type]
                list_slots=(own, process),
            )
            tasks.append(asyncio.create_task(syncer.run()))
    try:
        await eventually_async(lambda: lister.done == 12, timeout=5, interval=0.01)
        assert lister.most == 3
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Negotiator:
    """Answers the targets it is given; records what was published."""

    def __init__(self, targets: list[SyncTarget]) -> None:
        self.targets = targets
        self.warnings: list[str] = []
        self.sync_error = ""

    async def negotiate(self) -> list[SyncTarget]:
        return self.targets

    async def publish(self, targets: Sequence[SyncTarget]) -> None:
        pass


async def test_a_type_asked_for_differently_gets_a_new_worker() -> None:
    """The Event kinds grow (a CRD appeared under eventsInvolvedResources: ["*"]): the events
    worker starts over with the new filter; a worker whose target is unchanged is kept."""
    events = ResourceType("", "v1", "events", "Event")
    synchro = ClusterSynchro(
        name="c",
        access=access_from_spec({"apiserver": "https://10.0.0.1", "tokenData": "dA=="}),
        sync_resources=[],
        writer=Storage(),  # type: ignore[arg-type]
        catalog=Catalog(),  # type: ignore[arg-type]
        client=SlowLister(),  # type: ignore[arg-type]
    )
    pods = SyncTarget(ResourceType("", "v1", "pods", "Pod"), True)
    before = SyncTarget(events, True, event_kinds=frozenset({"Pod"}))
    synchro.negotiator = Negotiator([pods, before])  # type: ignore[assignment]
    try:
        await synchro._reconcile_workers()
        pods_task = synchro.workers[("", "v1", "pods")][1]
        events_task = synchro.workers[("", "v1", "events")][1]
        after = SyncTarget(events, True, event_kinds=frozenset({"Pod", "Widget"}))
        synchro.negotiator = Negotiator([pods, after])  # type: ignore[assignment]
        await synchro._reconcile_workers()
        assert synchro.workers[("", "v1", "pods")][1] is pods_task
        syncer, task = synchro.workers[("", "v1", "events")]
        assert task is not events_task and events_task.cancelled()
        assert syncer.target.event_kinds == {"Pod", "Widget"}
    finally:
        await synchro._stop_workers()
