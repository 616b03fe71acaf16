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

Per dialect, one upsert statement for all batches of a group:

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
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clusterpedia.gvr import ResourceType
from clusterpedia.storage.errors import StorageFailed, StorageUnavailable, is_transient
from clusterpedia.storage.grouping import GroupCommit
from clusterpedia.storage.records import Change, Delete, Upsert, as_bytes, stamp_resource_version
from clusterpedia.storage.schema import (
    HEAD,
    LABEL_KEY_MAX,
    LABEL_VALUE_MAX,
    cluster_health,
    resource_labels,
    resource_types,
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

_SCOPE_COLUMNS = ("group", "version", "resource", "kind", "cluster")  # what rows of a batch share
_UPDATED_COLUMNS = (
    "kind",
    "uid",
    "owner_uid",
    "created_at",
    "synced_at",
    "deleted_at",
    "labels",
    "object",
)

# PostgreSQL: rows arrive by binary COPY into a per-connection temporary table (psycopg
# formats COPY rows in C; binding arrays of parameters instead spent half the write time in
# Python array formatting), then one INSERT ... SELECT upserts the group's batches.
_POSTGRES_STAGING = """
CREATE TEMPORARY TABLE IF NOT EXISTS resources_staging (
    "group" text, version text, resource text, kind text, cluster text,
    namespace text, name text, uid text, owner_uid text, resource_version text,
    created_at timestamp, deleted_at timestamp, labels text, object bytea
) ON COMMIT DELETE ROWS
"""
_POSTGRES_COPY = (
    'COPY resources_staging ("group", version, resource, kind, cluster, namespace, name, uid,'
    " owner_uid, resource_version, created_at, deleted_at, labels, object)"
    " FROM STDIN (FORMAT BINARY)"
)
_POSTGRES_COPY_TYPES = [
    "text", "text", "text", "text", "text", "text", "text", "text", "text", "text",
    "timestamp", "timestamp", "text", "bytea",
]  # fmt: skip
# Every column a query filters or sorts on; not ``object``, whose statistics no plan uses and
# whose sampling would read (and decompress) thousands of objects each time.
_POSTGRES_ANALYZE = "ANALYZE resources ({})".format(
    ", ".join(f'"{column.name}"' for column in resources.columns if column.name != "object")
)
_POSTGRES_COPY_NEW = (
    'COPY resources ("group", version, resource, kind, cluster, namespace, name, uid, owner_uid,'
    " resource_version, created_at, deleted_at, labels, object, synced_at)"
    " FROM STDIN (FORMAT BINARY)"
)
_POSTGRES_COPY_NEW_TYPES = [
    "text", "text", "text", "text", "text", "text", "text", "text", "text", "text",
    "timestamp", "timestamp", "jsonb", "bytea", "timestamp",
]  # fmt: skip
# One statement for every batch of a group (so staged rows are used once, then go at commit).
_POSTGRES_UPSERT = sa.text(
    """
INSERT INTO resources ("group", version, resource, kind, cluster, namespace, name, uid,
                       owner_uid, resource_version, created_at, synced_at, deleted_at, labels,
                       object)
SELECT s."group", s.version, s.resource, s.kind, s.cluster, s.namespace, s.name, s.uid,
       s.owner_uid, s.resource_version, s.created_at, :synced_at, s.deleted_at, s.labels::jsonb,
       s.object
FROM resources_staging AS s
ON CONFLICT ON CONSTRAINT uq_resources_key DO UPDATE SET
    kind = excluded.kind, uid = excluded.uid, owner_uid = excluded.owner_uid,
    resource_version = excluded.resource_version, created_at = excluded.created_at,
    synced_at = excluded.synced_at, deleted_at = excluded.deleted_at, labels = excluded.labels,
    object = excluded.object
WHERE resources.resource_version IS DISTINCT FROM excluded.resource_version
"""
)


_LOG_COLUMNS = (
    "rv", "type", "group", "version", "resource", "cluster", "namespace", "name", "labels",
    "object", "logged_at",
)  # fmt: skip
_QUOTED_LOG_COLUMNS = ", ".join(f'"{c}"' for c in _LOG_COLUMNS)  # PostgreSQL and SQLite
_POSTGRES_LOG_COPY = f"COPY change_log ({_QUOTED_LOG_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_POSTGRES_LOG_TYPES = [
    "int8", "text", "text", "text", "text", "text", "text", "text", "text", "bytea", "timestamp",
]  # fmt: skip
NOTIFY_CHANNEL = "clusterpedia_change_log"
_ALLOCATE = sa.text("UPDATE change_log_marks SET rv = rv + :n WHERE name = :head RETURNING rv")
# PostgreSQL: the same, and a NOTIFY of the new head (delivered at commit) in the same round trip.
_POSTGRES_ALLOCATE = sa.text(
    "UPDATE change_log_marks SET rv = rv + :n WHERE name = :head"
    f" RETURNING rv, pg_notify('{NOTIFY_CHANNEL}', rv::text)"
)
# MariaDB has no UPDATE ... RETURNING: LAST_INSERT_ID(expr) remembers the value per session.
_MYSQL_ALLOCATE = sa.text(
    "UPDATE change_log_marks SET rv = LAST_INSERT_ID(rv + :n) WHERE name = :head"
)
_LABEL_COLUMNS = ("group", "version", "resource", "cluster", "namespace", "name", "key", "value")
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
_SQLITE_UPSERT = """
INSERT INTO resources ("group", version, resource, kind, cluster, namespace, name, uid,
                       owner_uid, resource_version, created_at, synced_at, deleted_at, labels,
                       object)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT ("group", version, resource, cluster, namespace, name) DO UPDATE SET
    kind = excluded.kind, uid = excluded.uid, owner_uid = excluded.owner_uid,
    resource_version = excluded.resource_version, created_at = excluded.created_at,
    synced_at = excluded.synced_at, deleted_at = excluded.deleted_at, labels = excluded.labels,
    object = excluded.object
WHERE resources.resource_version IS NOT excluded.resource_version
"""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _scope(table: sa.Table, cluster: str, rtype: ResourceType | None) -> list[Any]:
    """Conditions selecting one cluster's rows (of one resource type) in ``table``."""
    conditions = [table.c.cluster == cluster]
    if rtype is not None:
        conditions += [
            table.c.group == rtype.group,
            table.c.version == rtype.version,
            table.c.resource == rtype.resource,
        ]
    return conditions


async def _postgres_copy(
    connection: AsyncConnection, statement: str, types: list[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    """``rows`` into PostgreSQL by binary COPY on the transaction's own connection (psycopg
    formats COPY rows in C: binding arrays of parameters spent half the write time in Python)."""
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    async with driver.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            await copy.write_row(row)


def _scoped(batch: _Batch) -> tuple[str, str, str, str, str]:
    """The columns every row of ``batch`` shares, in the order the COPY statements name them."""
    rtype = batch.rtype
    return rtype.group, rtype.version, rtype.resource, rtype.kind, batch.cluster


def _copied(u: Upsert) -> tuple[Any, ...]:
    """An upsert's own columns, in the order both PostgreSQL COPY statements name them."""
    labels = u.labels.decode() if u.labels else None
    return (u.namespace, u.name, u.uid, u.owner_uid, u.resource_version, u.created_at,
            u.deleted_at, labels, u.object)  # fmt: skip


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
        self.dialect = engine.dialect.name
        # Driver-level SQL: label rows are many and tiny, so no per-row parameter processing.
        # Idempotent, so a wrong "is_new" hint can never fail a batch.
        self._label_insert = (
            f"INSERT INTO resource_labels ({', '.join(f'`{c}`' for c in _LABEL_COLUMNS)})"
            f" VALUES ({', '.join(['%s'] * len(_LABEL_COLUMNS))})"
            " ON DUPLICATE KEY UPDATE `value` = VALUES(`value`)"
        )
        self._rows_written = 0
        self._analyze_at = ANALYZE_FIRST_AT
        # SQLite has one writer at a time: a transaction that read first and then writes
        # fails at once (SQLITE_BUSY, no busy wait) whenever another one committed meanwhile.
        # With a member of 250 types, 250 workers retried into each other for minutes; taking
        # turns here costs nothing the database would not have serialised anyway.
        self._turns: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
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
            await self._upsert(connection, written)
            if self.dialect == "mysql":
                for plan, stamped in written:
                    await self._index_labels(connection, plan.batch, stamped, plan.gone)
            await self._log(connection, log)
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
        parameters = {"n": count, "head": HEAD}
        if self.dialect == "mysql":
            await connection.execute(_MYSQL_ALLOCATE, parameters)
            head = (await connection.exec_driver_sql("SELECT LAST_INSERT_ID()")).scalar_one()
        elif self.dialect == "postgresql":
            head = (await connection.execute(_POSTGRES_ALLOCATE, parameters)).one()[0]
        else:
            head = (await connection.execute(_ALLOCATE, parameters)).scalar_one()
        return int(head) - count + 1

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
                *_scope(resources, cluster, rtype), self._keys_condition(keys)
            )
        )
        wanted = set(keys)
        return {(ns, name): tuple(rest) for ns, name, *rest in rows if (ns, name) in wanted}

    def _keys_condition(self, keys: list[tuple[str, str]]) -> Any:
        """Rows among ``keys``, or a superset the caller filters: SQLite seeks the name index
        with ``name IN`` but only the (type, cluster) prefix with a row-value IN."""
        if self.dialect == "sqlite":
            return resources.c.name.in_(sorted({name for _, name in keys}))
        return sa.tuple_(resources.c.namespace, resources.c.name).in_(keys)

    async def _log(self, connection: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        """Append ``rows`` (one value per ``_LOG_COLUMNS``) to the change log."""
        if self.dialect == "postgresql":
            await _postgres_copy(connection, _POSTGRES_LOG_COPY, _POSTGRES_LOG_TYPES, rows)
            return
        if self.dialect == "sqlite":
            full = [(*row[:9], row[9].decode(), row[10].strftime(_SQLITE_TIME)) for row in rows]
            placeholders = ", ".join("?" * len(_LOG_COLUMNS))
            columns = _QUOTED_LOG_COLUMNS
        else:
            full = [(*row[:9], row[9].decode(), row[10]) for row in rows]
            placeholders = ", ".join(["%s"] * len(_LOG_COLUMNS))
            columns = ", ".join(f"`{c}`" for c in _LOG_COLUMNS)
        await connection.exec_driver_sql(
            f"INSERT INTO change_log ({columns}) VALUES ({placeholders})", full
        )

    async def _maybe_analyze(self, rows: int) -> None:
        """Refresh the planner statistics as the table grows (at 1k, 2k, 4k, ... rows written
        by this process).

        SQLite has no automatic statistics: without them it walks the primary key for ORDER BY
        instead of using the owner index (35 ms instead of 4 ms per owner search at 40k rows).
        PostgreSQL's autovacuum gets there, but up to a minute after a bulk initial sync; until
        then the planner believes the table empty and sorts a whole type for every page (43 ms
        instead of 0.6 ms for a page of 500 at 20k pods, bench/api.py). InnoDB recalculates
        its statistics itself after 10% of a table changes."""
        if self.dialect not in ("sqlite", "postgresql"):
            return
        self._rows_written += rows
        if self._rows_written < self._analyze_at:
            return
        self._analyze_at = self._rows_written * 2
        async with self.engine.begin() as connection:
            if self.dialect == "sqlite":
                # Sampled statistics: enough for index choice, and cheap at any table size.
                await connection.exec_driver_sql("PRAGMA analysis_limit=1000")
                await connection.exec_driver_sql("ANALYZE")
            else:
                await connection.exec_driver_sql(_POSTGRES_ANALYZE)
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
        ).where(*_scope(resources, cluster, rtype))
        rows = await self._read(query, what=f"read resource versions of {cluster}/{rtype}")
        return {(f"{namespace}/{name}" if namespace else name): rv for namespace, name, rv in rows}

    async def delete_cluster(self, cluster: str, *, rtype: ResourceType | None = None) -> int:
        """Remove every row of ``cluster`` (or only of one of its resource types).

        Objects go in batches through :meth:`apply`, so watchers get a DELETED event for each
        and no transaction holds the head lock for a whole cluster."""
        removed = 0
        for target in [rtype] if rtype is not None else await self._stored_types(cluster):
            while keys := await self._some_keys(cluster, target, DELETE_BATCH):
                removed += await self.apply(
                    cluster=cluster, rtype=target, changes=[Delete(ns, name) for ns, name in keys]
                )
        catalog = sa.delete(resource_types).where(*_scope(resource_types, cluster, rtype))
        health = sa.delete(cluster_health).where(cluster_health.c.cluster == cluster)

        async def forget() -> None:
            async with self._turns, self.engine.begin() as connection:
                await connection.execute(catalog)
                if rtype is None:
                    await connection.execute(health)

        await self._retrying(forget, what=f"forget cluster {cluster}")
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
            .where(*_scope(resources, cluster, rtype))
            .limit(limit)
        )
        rows = await self._read(query, what=f"read keys of {cluster}/{rtype}")
        return [(ns, name) for ns, name in rows]

    async def _index_labels(
        self,
        connection: AsyncConnection,
        batch: _Batch,
        upserts: list[Upsert],
        deletes: list[Delete],
    ) -> None:
        """Replace the label rows of every object in the batch (MySQL only)."""
        cluster, rtype = batch.cluster, batch.rtype
        keys = [u.key for u in upserts if not u.is_new] + [d.key for d in deletes]
        if keys:
            await self._delete_keys(
                connection, resource_labels, cluster=cluster, rtype=rtype, keys=keys
            )
        constant = (rtype.group, rtype.version, rtype.resource, cluster)
        rows = [
            (*constant, u.namespace, u.name, key, value)
            for u in upserts
            if u.labels
            for key, value in orjson.loads(u.labels).items()
            # Kubernetes allows only short ASCII keys and values; anything else cannot match a
            # valid selector, so it is not indexed.
            if len(key) <= LABEL_KEY_MAX
            and isinstance(value, str)
            and len(value) <= LABEL_VALUE_MAX
            and key.isascii()
            and value.isascii()
        ]
        if rows:
            await connection.exec_driver_sql(self._label_insert, rows)

    async def _delete(
        self, connection: AsyncConnection, batch: _Batch, deletes: list[Delete]
    ) -> None:
        keys = [d.key for d in deletes]
        await self._delete_keys(
            connection, resources, cluster=batch.cluster, rtype=batch.rtype, keys=keys
        )

    async def _delete_keys(
        self,
        connection: AsyncConnection,
        table: sa.Table,
        *,
        cluster: str,
        rtype: ResourceType,
        keys: list[tuple[str, str]],
    ) -> None:
        """Delete the rows of ``keys`` (namespace, name) of one cluster and type from ``table``.

        PostgreSQL and MariaDB seek the index for every pair of ``(namespace, name) IN (...)``;
        SQLite seeks only the (type, cluster) prefix and scans the rest, so there each key is
        its own statement of one prepared executemany, in-process and cheap."""
        if self.dialect != "sqlite":
            await connection.execute(
                sa.delete(table).where(
                    *_scope(table, cluster, rtype),
                    sa.tuple_(table.c.namespace, table.c.name).in_(keys),
                )
            )
            return
        statement = (
            f'DELETE FROM {table.name} WHERE "group" = ? AND version = ? AND resource = ?'
            " AND cluster = ? AND namespace = ? AND name = ?"
        )
        scope = (rtype.group, rtype.version, rtype.resource, cluster)
        await connection.exec_driver_sql(statement, [(*scope, *key) for key in keys])

    async def _upsert(
        self, connection: AsyncConnection, written: list[tuple[_Plan, list[Upsert]]]
    ) -> None:
        """Insert or update the stamped upserts of every batch of a group in one statement. On
        PostgreSQL the batches hinted all new are copied straight in (a unique key violation
        then fails the transaction, and :meth:`_apply_together` writes the batches again)."""
        synced_at = _now()
        if self.dialect == "postgresql":
            await self._postgres_upsert(connection, written, synced_at)
            return
        rows = [(_scoped(plan.batch), u) for plan, stamped in written for u in stamped]
        if not rows:
            return
        if self.dialect == "sqlite":
            synced = synced_at.strftime(_SQLITE_TIME)
            # Plain tuples straight to sqlite3's executemany: SQLAlchemy's per-row parameter
            # processing cost more than SQLite's own work (write ratio 0.42 -> see bench).
            # Timestamps use SQLAlchemy's SQLite storage format so reads parse them back.
            tuples = [
                (
                    *scope,
                    u.namespace,
                    u.name,
                    u.uid,
                    u.owner_uid,
                    u.resource_version,
                    u.created_at.strftime(_SQLITE_TIME),
                    synced,
                    u.deleted_at.strftime(_SQLITE_TIME) if u.deleted_at else None,
                    u.labels.decode() if u.labels else None,
                    u.object.decode(),  # text: a bytes value would be stored as a BLOB
                )
                for scope, u in rows
            ]
            await connection.exec_driver_sql(_SQLITE_UPSERT, tuples)
            return
        dicts = [
            {
                **dict(zip(_SCOPE_COLUMNS, scope, strict=True)),
                "namespace": u.namespace,
                "name": u.name,
                "uid": u.uid,
                "owner_uid": u.owner_uid,
                "resource_version": u.resource_version,
                "created_at": u.created_at,
                "synced_at": synced_at,
                "deleted_at": u.deleted_at,
                "labels": u.labels.decode() if u.labels else None,
                "object": u.object.decode(),  # text columns: a bytes value would bind as BLOB
            }
            for scope, u in rows
        ]
        await connection.execute(self._mysql_upsert_statement(), dicts)

    async def _postgres_upsert(
        self,
        connection: AsyncConnection,
        written: list[tuple[_Plan, list[Upsert]]],
        synced_at: datetime,
    ) -> None:
        new = [
            (*_scoped(plan.batch), *_copied(u), synced_at)
            for plan, stamped in written
            if plan.all_new
            for u in stamped
        ]
        if new:
            # Straight into ``resources`` by binary COPY: no staging table and no conflict
            # check, a fifth of PostgreSQL's CPU on an initial sync.
            await _postgres_copy(connection, _POSTGRES_COPY_NEW, _POSTGRES_COPY_NEW_TYPES, new)
        staged = [
            (*_scoped(plan.batch), *_copied(u))
            for plan, stamped in written
            if not plan.all_new
            for u in stamped
        ]
        if staged:
            # Every time: a table created in a transaction that rolls back is gone again, and
            # IF NOT EXISTS costs one round trip.
            await connection.exec_driver_sql(_POSTGRES_STAGING)
            await _postgres_copy(connection, _POSTGRES_COPY, _POSTGRES_COPY_TYPES, staged)
            await connection.execute(_POSTGRES_UPSERT, {"synced_at": synced_at})

    @staticmethod
    def _mysql_upsert_statement() -> sa.Insert:
        insert = mysql_dialect.insert(resources)
        changed = resources.c.resource_version != insert.inserted.resource_version
        # MySQL evaluates SET left to right with updated values: resource_version goes last,
        # and a list (not a dict) keeps SQLAlchemy from reordering the assignments.
        assignments: list[tuple[str, Any]] = [
            (column, sa.func.IF(changed, insert.inserted[column], resources.c[column]))
            for column in _UPDATED_COLUMNS
        ]
        assignments.append(("resource_version", insert.inserted.resource_version))
        return insert.on_duplicate_key_update(assignments)

    def _database_error(self, error: Exception) -> DBAPIError | None:
        """``error`` as SQLAlchemy's wrapper if it came from the database: statements sent on
        the driver's own connection (the COPY paths) raise the driver's errors unwrapped."""
        if isinstance(error, DBAPIError):
            return error
        driver_error = self.engine.dialect.loaded_dbapi.Error
        if isinstance(error, driver_error):
            wrapped = DBAPIError.instance(None, None, error, driver_error)
            assert isinstance(wrapped, DBAPIError)  # what it returns for a driver error
            return wrapped
        return None

    async def _retrying(self, operation: Callable[[], Awaitable[T]], *, what: str) -> T:
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return await operation()
            except Exception as raised:
                error = self._database_error(raised)
                if error is None:
                    raise
                if not is_transient(error):
                    raise StorageFailed(f"{what}: {error.orig}") from error
                if attempt == RETRY_ATTEMPTS:
                    raise StorageUnavailable(
                        f"{what}: database unavailable ({error.orig})"
                    ) from error
                delay = RETRY_BASE_DELAY * 2**attempt * (0.5 + random.random())
                logger.warning(
                    "%s failed (%s); retry %d in %.2fs", what, error.orig, attempt, delay
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")
