"""Group commit (clusterpedia/storage/grouping.py) with a fake commit that records its groups;
the real transactions are in tests/integration/test_storage_writes.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from clusterpedia.storage.grouping import GroupCommit

Batch = tuple[str, int]  # (key, weight)


class Recorder:
    """A commit that takes ``delay`` seconds and returns each batch's weight, or fails the
    batches whose key is in ``failing``."""

    def __init__(self, delay: float = 0.02, failing: frozenset[str] = frozenset()):
        self.delay = delay
        self.failing = failing
        self.groups: list[list[Batch]] = []
        self.running: list[set[str]] = []  # keys of the groups running, seen at each start

    async def __call__(self, batches: list[Batch]) -> Sequence[int | BaseException]:
        keys = {key for key, _ in batches}
        self.running.append(keys)
        self.groups.append(batches)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running.remove(keys)
        return [ValueError(key) if key in self.failing else weight for key, weight in batches]


def grouped(recorder: Recorder, *, max_weight: int = 100) -> GroupCommit[Batch, int]:
    return GroupCommit(recorder, key=lambda b: b[0], weight=lambda b: b[1], max_weight=max_weight)


async def test_a_lone_batch_starts_at_once_and_waiting_ones_share_the_next_group() -> None:
    recorder = Recorder()
    groups = grouped(recorder)
    results = await asyncio.gather(*(groups.submit((f"k{n}", 1)) for n in range(10)))
    assert results == [1] * 10
    # Two groups start at once (one batch each); the eight that waited go together.
    assert [len(group) for group in recorder.groups] == [1, 1, 8]


async def test_two_batches_of_one_key_never_share_or_overlap() -> None:
    recorder = Recorder()
    overlaps: list[set[str]] = []

    async def commit(batches: list[Batch]) -> Sequence[int | BaseException]:
        keys = [key for key, _ in batches]
        assert len(keys) == len(set(keys)), "one key twice in a group"
        overlaps.extend(set(keys) & running for running in recorder.running)
        return await recorder(batches)

    groups = GroupCommit(commit, key=lambda b: b[0], weight=lambda b: b[1], max_weight=100)
    await asyncio.gather(*(groups.submit((f"k{n % 3}", 1)) for n in range(12)))
    assert sum(len(group) for group in recorder.groups) == 12
    assert not any(overlaps)


async def test_a_group_stops_at_the_weight_limit_but_takes_one_heavy_batch() -> None:
    recorder = Recorder()
    groups = grouped(recorder, max_weight=10)
    batches = [("a", 1), ("b", 1), ("c", 30), ("d", 4), ("e", 4), ("f", 4), ("g", 4)]
    assert await asyncio.gather(*(groups.submit(b) for b in batches)) == [1, 1, 30, 4, 4, 4, 4]
    assert [sum(w for _, w in group) for group in recorder.groups] == [1, 1, 30, 8, 8]


async def test_each_caller_gets_its_own_outcome() -> None:
    recorder = Recorder(failing=frozenset({"bad"}))
    groups = grouped(recorder)
    outcomes = await asyncio.gather(
        *(groups.submit((key, 1)) for key in ("x", "y", "good", "bad", "fine")),
        return_exceptions=True,
    )
    assert outcomes[:3] == [1, 1, 1] and outcomes[4] == 1
    assert isinstance(outcomes[3], ValueError)


async def test_a_commit_that_raises_fails_every_batch_of_its_group() -> None:
    async def broken(batches: list[Batch]) -> Sequence[int | BaseException]:
        raise RuntimeError("down")

    groups = GroupCommit(broken, key=lambda b: b[0], weight=lambda b: b[1], max_weight=100)
    for outcome in await asyncio.gather(
        *(groups.submit((f"k{n}", 1)) for n in range(4)), return_exceptions=True
    ):
        assert isinstance(outcome, RuntimeError)


async def test_a_caller_cancelled_while_waiting_withdraws_its_batch() -> None:
    recorder = Recorder(delay=0.05)
    groups = grouped(recorder)
    first = [asyncio.create_task(groups.submit((f"busy{n}", 1))) for n in range(2)]
    await asyncio.sleep(0)
    waiting = asyncio.create_task(groups.submit(("withdrawn", 1)))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await asyncio.gather(*first) == [1, 1]
    assert await groups.submit(("after", 1)) == 1
    assert [key for group in recorder.groups for key, _ in group] == ["busy0", "busy1", "after"]


async def test_a_caller_cancelled_after_its_group_started_is_committed_anyway() -> None:
    recorder = Recorder(delay=0.05, failing=frozenset({"left"}))
    groups = grouped(recorder)
    left = asyncio.create_task(groups.submit(("left", 1)))
    await asyncio.sleep(0.01)
    left.cancel()
    with pytest.raises(asyncio.CancelledError):
        await left
    await asyncio.sleep(0.08)  # the group ends; its error is marked seen, not left unretrieved
    assert recorder.groups == [[("left", 1)]]
