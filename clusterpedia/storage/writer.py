"""The batched write path used by the sync workers.

A batch holds the changes of one cluster and one resource type and is applied atomically: one
multi-row upsert statement, one delete statement and its rows of the change log, never a
statement per object. Batches that other workers submit meanwhile share the transaction (group
commit, ``storage/grouping.py``): one head lock, one commit and one change-log insert for all.
Objects whose stored member resourceVersion equals the incoming one are skipped, so a relist
after a restart writes (and logs) only what changed.
Transient database errors retry the whole transaction with backoff; a batch is applied
entirely or not at all.

Global resourceVersions: each transaction takes the next ``n`` numbers from the ``head`` row of
``change_log_marks`` and holds that row's lock until it commits. Writers therefore commit in rv
order, and a reader that sees rv N has every rv below it (``storage/changelog.py`` relies on
this). Every writer takes this lock before touching any other row, so writers cannot deadlock.
The lock is held for one group; ``bench/sync.py`` and ``bench/fleet.py`` measure what that costs.

Per dialect (``storage/dialects/``), one upsert statement for all batches of a group:

- PostgreSQL: binary ``COPY`` of the rows into a temporary table, then one ``INSERT ...
  SELECT ... ON CONFLICT DO UPDATE ... WHERE rv differs`` (constant SQL text). Batches of rows
  the caller knows are new (an initial list) are copied straight into ``resources``.
- MySQL/MariaDB: ``INSERT ... VALUES (...), (...) ON DUPLICATE KEY UPDATE col = IF(rv differs,
  new, old)``; the driver's executemany folds the rows into one multi-row statement.
- SQLite: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE rv differs`` through sqlite3's
  executemany inside one transaction (in-process, so there is no round trip to save).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clusterpedia.backoff import Backoff
from clusterpedia.gvr import ResourceType
from clusterpedia.storage.dialects import BatchKey, dialect_for
from clusterpedia.storage.dialects.base import scope_of
from clusterpedia.storage.errors import (
    StorageFailed,
    StorageUnavailable,
    database_error,
    is_transient,
    storage_error,
)
from clusterpedia.storage.grouping import GroupCommit
from clusterpedia.storage.records import Change, Delete, Upsert, as_bytes, stamp_resource_version
from clusterpedia.storage.schema import (
    HEAD,
    resources,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_ATTEMPTS = 6
RETRY_BASE_DELAY = 0.05
ANALYZE_FIRST_AT = 1000
DELETE_BATCH = 1000
# Changes in one group transaction: a few initial-list pages, or hundreds of watch batches.
GROUP_MAX_CHANGES = 2000


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _scoped(batch: _Batch) -> BatchKey:
    """The columns every row of ``batch`` shares."""
    rtype = batch.rtype
    return rtype.group, rtype.version, rtype.resource, rtype.kind, batch.cluster


def _dedupe(changes: Sequence[Change]) -> tuple[list[Upsert], list[Delete]]:
    """The last change per object wins (a batch may hold several events of one object)."""
    last: dict[tuple[str, str], Change] = {}
    for change in changes:
        last[change.key] = change
    upserts = [change for change in last.values() if isinstance(change, Upsert)]
    deletes = [change for change in last.values() if isinstance(change, Delete)]
    return upserts, deletes


@dataclass
class _Batch:
    """The deduplicated changes of one cluster and resource type, applied atomically."""

    cluster: str
    rtype: ResourceType
    upserts: list[Upsert]
    deletes: list[Delete]

    @property
    def key(self) -> tuple[str, ResourceType]:
        return self.cluster, self.rtype

    @property
    def size(self) -> int:
        return len(self.upserts) + len(self.deletes)


@dataclass
class _Plan:
    """What a batch changes, read inside its transaction."""

    batch: _Batch
    stored: set[tuple[str, str]]  # keys with a row already
    last: dict[tuple[str, str], tuple[Any, ...]]  # deleted key -> (labels, object) stored
    changed: list[Upsert]  # upserts whose resourceVersion differs from the stored one
    gone: list[Delete]  # deletes of stored rows
    all_new: bool  # no upsert has a row (trusted hint): PostgreSQL copies them straight in

    @property
    def logged(self) -> int:
        """How many change-log events the plan writes."""
        return len(self.changed) + len(self.gone)


def _stamp(
    plan: _Plan, *, rv: int, now: datetime, log: list[tuple[Any, ...]]
) -> tuple[list[Upsert], int]:
    """``plan``'s upserts with global resourceVersions from ``rv`` on (the objects carry
    them), its change-log rows appended to ``log``; and the next free resourceVersion."""
    rtype = plan.batch.rtype
    scope = (rtype.group, rtype.version, rtype.resource, plan.batch.cluster)
    stamped: list[Upsert] = []
    for u in plan.changed:
        data = stamp_resource_version(u.object, rv)
        stamped.append(replace(u, object=data))
        kind = "MODIFIED" if u.key in plan.stored else "ADDED"
        labels = u.labels.decode() if u.labels else None
        log.append((rv, kind, *scope, u.namespace, u.name, labels, data, now))
        rv += 1
    for d in plan.gone:
        labels, data = plan.last[d.key]
        data = stamp_resource_version(as_bytes(data), rv)
        log.append((rv, "DELETED", *scope, d.namespace, d.name, labels, data, now))
        rv += 1
    return stamped, rv


def _describe(batches: list[_Batch]) -> str:
    if len(batches) == 1:
        batch = batches[0]
        return f"apply {batch.size} changes to {batch.cluster}/{batch.rtype}"
    clusters = len({batch.cluster for batch in batches})
    changes = sum(batch.size for batch in batches)
    return f"apply {changes} changes in {len(batches)} batches of {clusters} clusters"


class ResourceWriter:
    """Applies batches of changes and answers the questions a resuming sync worker asks."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.dialect = dialect_for(engine)
        self._rows_written = 0
        self._analyze_at = ANALYZE_FIRST_AT
        self._turns: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if self.dialect.serial_writes else contextlib.nullcontext()
        )
        self._groups: GroupCommit[_Batch, int] = GroupCommit(
            self._commit_group,
            key=lambda batch: batch.key,
            weight=lambda batch: batch.size,
            max_weight=GROUP_MAX_CHANGES,
        )

    async def apply(self, *, cluster: str, rtype: ResourceType, changes: Sequence[Change]) -> int:
        """Apply ``changes`` of one cluster and resource type atomically, logging each real
        change; return how many were logged (no-ops and deletes of unknown objects are not).
        Batches applied concurrently share a transaction (``storage/grouping.py``)."""
        upserts, deletes = _dedupe(changes)
        if not upserts and not deletes:
            return 0
        return await self._groups.submit(_Batch(cluster, rtype, upserts, deletes))

    async def _commit_group(self, batches: list[_Batch]) -> list[int | BaseException]:
        """Apply ``batches`` in one transaction; each one's number of logged changes, or the
        error that stopped it."""
        try:
            logged: list[int | BaseException] = [*await self._apply_together(batches)]
        except StorageUnavailable as error:
            return [error] * len(batches)  # the database is down for all of them
        except Exception as error:
            if len(batches) == 1:
                raise
            # One bad batch must not fail the others: each alone, each with its own outcome.
            logger.warning("%s failed (%s); applying them one by one", _describe(batches), error)
            logged = []
            for batch in batches:
                try:
                    logged += await self._apply_together([batch])
                except Exception as failure:  # the outcome of this batch
                    logged.append(failure)
        await self._maybe_analyze(sum(n for n in logged if isinstance(n, int)))
        return logged

    async def _apply_together(self, batches: list[_Batch]) -> list[int]:
        what = _describe(batches)
        try:
            return await self._retrying(lambda: self._transaction(batches, True), what=what)
        except StorageFailed as error:
            # A row the caller called new exists after all (a hint from a stale seed): the
            # transaction rolled back whole, so write it again trusting nothing.
            if not isinstance(error.__cause__, IntegrityError) or not any(
                u.is_new for batch in batches for u in batch.upserts
            ):
                raise
            logger.info("%s: a row hinted new exists; writing the batches as upserts", what)
            return await self._retrying(lambda: self._transaction(batches, False), what=what)

    async def _transaction(self, batches: list[_Batch], trust_new: bool) -> list[int]:
        async with self._turns, self.engine.begin() as connection:
            # Reads first, before the head lock is taken.
            plans = [await self._plan(connection, batch, trust_new) for batch in batches]
            count = sum(plan.logged for plan in plans)
            if not count:
                return [0] * len(plans)
            rv = await self._allocate(connection, count)
            log: list[tuple[Any, ...]] = []
            now = _now()
            written: list[tuple[_Plan, list[Upsert]]] = []  # each plan, its stamped upserts
            for plan in plans:
                stamped, rv = _stamp(plan, rv=rv, now=now, log=log)
                if plan.gone:
                    await self._delete(connection, plan.batch, plan.gone)
                written.append((plan, stamped))
            groups = [(_scoped(plan.batch), plan.all_new, stamped) for plan, stamped in written]
            await self.dialect.upsert(connection, groups, _now())
            if self.dialect.indexes_labels:
                for plan, stamped in written:
                    await self.dialect.index_labels(
                        connection,
                        cluster=plan.batch.cluster,
                        rtype=plan.batch.rtype,
                        upserts=stamped,
                        deleted=[d.key for d in plan.gone],
                    )
            await self.dialect.log(connection, log)
            return [plan.logged for plan in plans]

    async def _plan(self, connection: AsyncConnection, batch: _Batch, trust_new: bool) -> _Plan:
        """What of ``batch`` changes the stored rows. One worker writes a (cluster, type) and
        a group never holds two batches of one, so these reads stay true until commit."""
        cluster, rtype = batch.cluster, batch.rtype
        known = [u.key for u in batch.upserts if not (trust_new and u.is_new)]
        stored = await self._stored(connection, cluster, rtype, known, resources.c.resource_version)
        # The DELETED event carries the object's last stored state.
        last = await self._stored(
            connection,
            cluster,
            rtype,
            [d.key for d in batch.deletes],
            sa.cast(resources.c.labels, sa.Text),
            resources.c.object,
        )
        return _Plan(
            batch=batch,
            stored=set(stored),
            last=last,
            changed=[u for u in batch.upserts if stored.get(u.key) != (u.resource_version,)],
            gone=[d for d in batch.deletes if d.key in last],
            all_new=trust_new and not known,
        )

    async def _allocate(self, connection: AsyncConnection, count: int) -> int:
        """Take ``count`` global resourceVersions; return the first. Locks the head row until
        the transaction ends; on PostgreSQL the commit wakes the watch readers."""
        return await self.dialect.allocate(connection, count, head=HEAD) - count + 1

    async def _stored(
        self,
        connection: AsyncConnection,
        cluster: str,
        rtype: ResourceType,
        keys: list[tuple[str, str]],
        *columns: Any,
    ) -> dict[tuple[str, str], tuple[Any, ...]]:
        """(namespace, name) -> ``columns`` of the stored row, for those of ``keys`` stored."""
        if not keys:
            return {}
        rows = await connection.execute(
            sa.select(resources.c.namespace, resources.c.name, *columns).where(
                *scope_of(resources, cluster, rtype), self.dialect.keys_condition(keys)
            )
        )
        wanted = set(keys)
        return {(ns, name): tuple(rest) for ns, name, *rest in rows if (ns, name) in wanted}

    async def _maybe_analyze(self, rows: int) -> None:
        """Refresh the planner statistics as the table grows (at 1k, 2k, 4k, ... rows written
        by this process).

        SQLite has no automatic statistics: without them it walks the primary key for ORDER BY
        instead of using the owner index (35 ms instead of 4 ms per owner search at 40k rows).
        PostgreSQL's autovacuum gets there, but up to a minute after a bulk initial sync; until
        then the planner believes the table empty and sorts a whole type for every page (43 ms
        instead of 0.6 ms for a page of 500 at 20k pods, bench/api.py). InnoDB recalculates
        its statistics itself after 10% of a table changes."""
        if not self.dialect.analyze_statements:
            return
        self._rows_written += rows
        if self._rows_written < self._analyze_at:
            return
        self._analyze_at = self._rows_written * 2
        async with self.engine.begin() as connection:
            for statement in self.dialect.analyze_statements:
                await connection.exec_driver_sql(statement)
        logger.debug("refreshed planner statistics after %d rows", self._rows_written)

    async def _read(self, query: sa.Select[Any], *, what: str) -> list[Any]:
        """Every row of ``query``, retried like writes."""

        async def read() -> list[Any]:
            async with self.engine.connect() as connection:
                return list((await connection.execute(query)).all())

        return await self._retrying(read, what=what)

    async def resource_versions(self, *, cluster: str, rtype: ResourceType) -> dict[str, str]:
        """``namespace/name`` (or ``name``) -> stored member resourceVersion."""
        query = sa.select(
            resources.c.namespace, resources.c.name, resources.c.resource_version
        ).where(*scope_of(resources, cluster, rtype))
        rows = await self._read(query, what=f"read resource versions of {cluster}/{rtype}")
        return {(f"{namespace}/{name}" if namespace else name): rv for namespace, name, rv in rows}

    async def delete_cluster(self, cluster: str, *, rtype: ResourceType | None = None) -> int:
        """Remove every stored object of ``cluster`` (or only of one of its resource types);
        its catalog entry is the catalog's (``Catalog.forget``).

        Objects go in batches through :meth:`apply`, so watchers get a DELETED event for each
        and no transaction holds the head lock for a whole cluster."""
        removed = 0
        for target in [rtype] if rtype is not None else await self._stored_types(cluster):
            while keys := await self._some_keys(cluster, target, DELETE_BATCH):
                removed += await self.apply(
                    cluster=cluster, rtype=target, changes=[Delete(ns, name) for ns, name in keys]
                )
        return removed

    async def _stored_types(self, cluster: str) -> list[ResourceType]:
        query = (
            sa.select(
                resources.c.group, resources.c.version, resources.c.resource, resources.c.kind
            )
            .where(resources.c.cluster == cluster)
            .distinct()
        )
        rows = await self._read(query, what=f"read resource types of {cluster}")
        return [ResourceType(*row) for row in rows]

    async def _some_keys(
        self, cluster: str, rtype: ResourceType, limit: int
    ) -> list[tuple[str, str]]:
        query = (
            sa.select(resources.c.namespace, resources.c.name)
            .where(*scope_of(resources, cluster, rtype))
            .limit(limit)
        )
        rows = await self._read(query, what=f"read keys of {cluster}/{rtype}")
        return [(ns, name) for ns, name in rows]

    async def _delete(
        self, connection: AsyncConnection, batch: _Batch, deletes: list[Delete]
    ) -> None:
        await self.dialect.delete_keys(
            connection,
            resources,
            cluster=batch.cluster,
            rtype=batch.rtype,
            keys=[d.key for d in deletes],
        )

    async def _retrying(self, operation: Callable[[], Awaitable[T]], *, what: str) -> T:
        backoff = Backoff(RETRY_BASE_DELAY * 2, RETRY_BASE_DELAY * 2**RETRY_ATTEMPTS)
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return await operation()
            except Exception as raised:
                error = database_error(raised, self.engine.dialect.loaded_dbapi.Error)
                if error is None:
                    raise
                if not is_transient(error) or attempt == RETRY_ATTEMPTS:
                    raise storage_error(error, what) from error
                delay = backoff.next_delay()
                logger.warning(
                    "%s failed (%s); retry %d in %.2fs", what, error.orig, attempt, delay
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")
