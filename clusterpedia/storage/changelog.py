"""Reading and pruning the change log that watch is served from.

The writer (``writer.py``) appends one row per change with a dense, global resourceVersion,
committed in rv order. So a reader that got every row up to N and then finds N+2 first knows
N+1 is gone (pruned), without asking. Pruning moves the ``pruned`` mark first and deletes rows
after, in small transactions: a catch-up reader that checks the mark after its read knows
whether anything it needed could have been removed under it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterpedia.storage.dialects import dialect_for
from clusterpedia.storage.errors import database_errors
from clusterpedia.storage.records import as_bytes
from clusterpedia.storage.schema import HEAD, PRUNED, change_log, change_log_marks

logger = logging.getLogger(__name__)
L = change_log.c
PRUNE_CHUNK = 5000


@dataclass(slots=True, eq=False)
class ChangeEvent:
    """One logged change. ``object`` is served as stored; the parsed forms are computed at most
    once per event, however many watchers need them."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    group: str
    version: str
    resource: str
    cluster: str
    namespace: str
    name: str
    labels_json: str | None
    object: bytes  # b"" until loaded (ChangeLog.read with objects=False); never empty after
    _parsed: dict[str, Any] | None = field(default=None, repr=False)
    _labels: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def loaded(self) -> bool:
        return bool(self.object)

    @property
    def parsed(self) -> dict[str, Any]:
        if self._parsed is None:
            self._parsed = orjson.loads(self.object)
        return self._parsed

    @property
    def labels(self) -> dict[str, Any]:
        if self._labels is None:
            loaded = orjson.loads(self.labels_json) if self.labels_json else None
            self._labels = loaded if isinstance(loaded, dict) else {}
        return self._labels


@dataclass(frozen=True, slots=True)
class Marks:
    head: int  # the newest rv handed out
    pruned: int  # every rv up to this one may be gone


_COLUMNS = (L.rv, L.type, L.group, L.version, L.resource, L.cluster, L.namespace, L.name)


class ChangeLog:
    def __init__(self, engine: AsyncEngine, *, listen: bool = True):
        self.engine = engine
        self._dialect = dialect_for(engine)
        self._listen = listen

    @property
    def pushes(self) -> bool:
        """Whether :meth:`notifications` announces commits (otherwise: poll)."""
        return self._listen and self._dialect.pushes_changes

    def notifications(self) -> AsyncIterator[int | None]:
        """The head each commit reached, as writers announce it; ``None`` when announcements
        may have been missed (at every (re)connection). Only where :attr:`pushes`."""
        return self._dialect.notifications()

    @database_errors("reading the change log")
    async def marks(self) -> Marks:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(change_log_marks.c.name, change_log_marks.c.rv)
            )
            rows = {name: rv for name, rv in result}
        return Marks(head=int(rows.get(HEAD, 0)), pruned=int(rows.get(PRUNED, 0)))

    @database_errors("reading the change log")
    async def read(
        self,
        *,
        after: int,
        upto: int | None = None,
        limit: int = 500,
        group: str | None = None,
        version: str | None = None,
        resource: str | None = None,
        cluster: str | None = None,
        objects: bool = True,
    ) -> list[ChangeEvent]:
        """Events with ``after < rv <= upto`` in rv order, at most ``limit``, optionally of one
        type and cluster; without their objects (see :meth:`load`) unless ``objects``."""
        conditions = [L.rv > after]
        if upto is not None:
            conditions.append(L.rv <= upto)
        for column, value in (
            (L.group, group),
            (L.version, version),
            (L.resource, resource),
            (L.cluster, cluster),
        ):
            if value is not None:
                conditions.append(column == value)
        data = L.object if objects else sa.literal(b"", sa.LargeBinary)
        statement = (
            sa.select(*_COLUMNS, sa.cast(L.labels, sa.Text), data)
            .where(*conditions)
            .order_by(L.rv)
            .limit(limit)
        )
        async with self.engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [
            ChangeEvent(int(rv), kind, g, v, r, c, ns, name, labels, as_bytes(data))
            for rv, kind, g, v, r, c, ns, name, labels, data in rows
        ]

    @database_errors("reading the change log")
    async def logged_after(self, rv: int) -> datetime | None:
        """When the oldest change after ``rv`` still in the log was logged (UTC, naive), or
        None when there is none: how far behind a replica at ``rv`` is."""
        statement = sa.select(L.logged_at).where(L.rv > rv).order_by(L.rv).limit(1)
        async with self.engine.connect() as connection:
            value = (await connection.execute(statement)).scalar()
        return value if isinstance(value, datetime) else None

    @database_errors("reading the change log")
    async def load(self, events: list[ChangeEvent]) -> list[ChangeEvent]:
        """Fill in the objects of ``events``; return those whose rows were pruned meanwhile."""
        wanted = {event.rv: event for event in events}
        statement = sa.select(L.rv, L.object).where(L.rv.in_(sorted(wanted)))
        async with self.engine.connect() as connection:
            for rv, data in await connection.execute(statement):
                wanted.pop(int(rv)).object = as_bytes(data)
        return list(wanted.values())

    @database_errors("pruning the change log")
    async def prune(self, *, max_age: timedelta | None, max_events: int | None) -> int:
        """Drop events older than ``max_age`` and beyond the newest ``max_events``; return how
        many rows were deleted. Safe to run from several replicas at once."""
        marks = await self.marks()
        upto = marks.pruned
        if max_events is not None:
            upto = max(upto, marks.head - max_events)
        if max_age is not None:
            cutoff = datetime.now(UTC).replace(tzinfo=None) - max_age
            async with self.engine.connect() as connection:
                # rv and logged_at grow together: walk the key from the oldest row and stop
                # at the first recent one, reading only what is about to go.
                first_recent = (
                    await connection.execute(
                        sa.select(L.rv)
                        .where(L.rv > marks.pruned, L.logged_at >= cutoff)
                        .order_by(L.rv)
                        .limit(1)
                    )
                ).scalar()
            upto = max(upto, marks.head if first_recent is None else int(first_recent) - 1)
        upto = min(upto, marks.head)
        async with self.engine.begin() as connection:
            if upto > marks.pruned:
                await connection.execute(
                    change_log_marks.update()
                    .where(change_log_marks.c.name == PRUNED, change_log_marks.c.rv < upto)
                    .values(rv=upto)
                )
            oldest = (await connection.execute(sa.select(sa.func.min(L.rv)))).scalar()
        if oldest is None:
            return 0
        deleted = 0
        low = int(oldest) - 1
        while low < upto:
            high = min(low + PRUNE_CHUNK, upto)
            async with self.engine.begin() as connection:
                result = await connection.execute(
                    sa.delete(change_log).where(L.rv > low, L.rv <= high)
                )
                deleted += max(result.rowcount, 0)
            low = high
        if deleted:
            logger.info("pruned %d change log events up to resourceVersion %d", deleted, upto)
        return deleted
