"""A worker survives what it does not expect: small fakes of the member and the storage (the
real ones are in tests/integration/test_member_faults.py), to reach the paths no real member
takes on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from clusterpedia.kube.discovery import SyncTarget
from clusterpedia.storage.records import Change, ResourceType
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
