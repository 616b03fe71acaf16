"""Group commit: batches submitted while a transaction runs go together in the next one.

Every sync worker writes its own batches (one cluster, one resource type), and every write
transaction holds the change log's head row lock until its commit has reached the disk
(``storage/writer.py``). Twenty members' workers sending small watch batches therefore queued
behind that lock at about 45 commits a second, and a watch event waited 3.3 s (p99) at 200
changes a second (``bench/fleet.py``). Here a batch submitted while ``concurrency`` groups are
already running waits for one of them to end, then goes with every other waiting batch in one
transaction: one lock, one commit, one change-log insert for all of them. Under light load a
batch starts at once, alone, so nothing waits for company.

Two batches with one key (one cluster and type) never share a group or run in two groups at
once: the writer reads a batch's stored rows before it writes them, and those reads must see
the earlier batch of the same key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

B = TypeVar("B")
R = TypeVar("R")


class GroupCommit(Generic[B, R]):
    """Runs ``commit`` on groups of concurrently submitted batches."""

    def __init__(
        self,
        commit: Callable[[list[B]], Awaitable[Sequence[R | BaseException]]],
        *,
        key: Callable[[B], Hashable],
        weight: Callable[[B], int],
        max_weight: int,
        concurrency: int = 2,
    ):
        self._commit = commit
        self._key = key
        self._weight = weight
        self._max_weight = max_weight
        self._concurrency = concurrency
        self._pending: list[tuple[B, asyncio.Future[R]]] = []
        self._running: dict[asyncio.Task[None], set[Hashable]] = {}

    async def submit(self, batch: B) -> R:
        """Commit ``batch`` (with whatever else is waiting then) and return its result. A
        caller cancelled before its group started withdraws the batch; after that, the group
        commits it anyway (a transaction is never cut midway by one of its callers)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        entry = (batch, future)
        self._pending.append(entry)
        self._start_groups()
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            waiting = [e for e in self._pending if e is not entry]
            if len(waiting) < len(self._pending):
                self._pending = waiting
                future.cancel()
            else:
                future.add_done_callback(_retrieve)
            raise

    def _start_groups(self) -> None:
        while len(self._running) < self._concurrency and (group := self._next_group()):
            keys = {self._key(batch) for batch, _ in group}
            task = asyncio.create_task(self._run(group))
            self._running[task] = keys
            task.add_done_callback(self._ended)

    def _next_group(self) -> list[tuple[B, asyncio.Future[R]]]:
        """The waiting batches of the next group, oldest first, up to ``max_weight`` (always
        at least one batch, however heavy)."""
        busy = set().union(*self._running.values())
        group: list[tuple[B, asyncio.Future[R]]] = []
        weight = 0
        for entry in self._pending:
            key = self._key(entry[0])
            if key in busy:
                continue
            weight += self._weight(entry[0])
            if group and weight > self._max_weight:
                break
            busy.add(key)
            group.append(entry)
        taken = {id(entry) for entry in group}
        self._pending = [entry for entry in self._pending if id(entry) not in taken]
        return group

    async def _run(self, group: list[tuple[B, asyncio.Future[R]]]) -> None:
        try:
            outcomes: Sequence[R | BaseException] = await self._commit([b for b, _ in group])
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as error:  # handed to every caller of the group
            outcomes = [error] * len(group)
        assert len(outcomes) == len(group), "a commit returns one outcome per batch"
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _ended(self, task: asyncio.Task[None]) -> None:
        del self._running[task]
        self._start_groups()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark the error of a batch whose caller left as seen (the writer has logged it)."""
    if not future.cancelled():
        future.exception()
