"""The batched write path used by the sync workers.

A batch holds the changes of one cluster and one resource type and is applied in one
transaction: one multi-row upsert statement and one delete statement, never a statement per
object. Rows whose stored resourceVersion equals the incoming one are left untouched, so a
relist after a restart writes only what changed. Transient database errors retry the whole
transaction with backoff; a batch is applied entirely or not at all.

Per dialect:

- PostgreSQL: binary ``COPY`` of the batch into a temporary table, then one ``INSERT ...
  SELECT ... ON CONFLICT DO UPDATE ... WHERE rv differs`` (constant SQL text).
- MySQL/MariaDB: ``INSERT ... VALUES (...), (...) ON DUPLICATE KEY UPDATE col = IF(rv differs,
  new, old)``; the driver's executemany folds the rows into one multi-row statement.
- SQLite: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE rv differs`` through sqlite3's
  executemany inside one transaction (in-process, so there is no round trip to save).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clusterpedia.storage.errors import StorageFailed, StorageUnavailable, is_transient
from clusterpedia.storage.records import Change, Delete, ResourceType, Upsert
from clusterpedia.storage.schema import (
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
# Python array formatting), then one INSERT ... SELECT upserts the batch.
_POSTGRES_STAGING = """
CREATE TEMPORARY TABLE IF NOT EXISTS resources_staging (
    namespace text, name text, uid text, owner_uid text, resource_version text,
    created_at timestamp, deleted_at timestamp, labels text, object bytea
) ON COMMIT DELETE ROWS
"""
_POSTGRES_COPY = (
    "COPY resources_staging (namespace, name, uid, owner_uid, resource_version, created_at,"
    " deleted_at, labels, object) FROM STDIN (FORMAT BINARY)"
)
_POSTGRES_COPY_TYPES = [
    "text", "text", "text", "text", "text", "timestamp", "timestamp", "text", "bytea",
]  # fmt: skip
_POSTGRES_UPSERT = sa.text(
    """
INSERT INTO resources ("group", version, resource, kind, cluster, namespace, name, uid,
                       owner_uid, resource_version, created_at, synced_at, deleted_at, labels,
                       object)
SELECT :group, :version, :resource, :kind, :cluster, s.namespace, s.name, s.uid, s.owner_uid,
       s.resource_version, s.created_at, :synced_at, s.deleted_at, s.labels::jsonb, s.object
FROM resources_staging AS s
ON CONFLICT ON CONSTRAINT uq_resources_key DO UPDATE SET
    kind = excluded.kind, uid = excluded.uid, owner_uid = excluded.owner_uid,
    resource_version = excluded.resource_version, created_at = excluded.created_at,
    synced_at = excluded.synced_at, deleted_at = excluded.deleted_at, labels = excluded.labels,
    object = excluded.object
WHERE resources.resource_version IS DISTINCT FROM excluded.resource_version
"""
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


def _dedupe(changes: Sequence[Change]) -> tuple[list[Upsert], list[Delete]]:
    """The last change per object wins (a batch may hold several events of one object)."""
    last: dict[tuple[str, str], Change] = {}
    for change in changes:
        last[change.key] = change
    upserts = [change for change in last.values() if isinstance(change, Upsert)]
    deletes = [change for change in last.values() if isinstance(change, Delete)]
    return upserts, deletes


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

    async def apply(self, *, cluster: str, rtype: ResourceType, changes: Sequence[Change]) -> None:
        """Apply ``changes`` of one cluster and resource type atomically."""
        upserts, deletes = _dedupe(changes)
        if not upserts and not deletes:
            return

        async def transaction() -> None:
            async with self.engine.begin() as connection:
                if deletes:
                    await self._delete(connection, cluster=cluster, rtype=rtype, deletes=deletes)
                if upserts:
                    await self._upsert(connection, cluster=cluster, rtype=rtype, upserts=upserts)
                if self.dialect == "mysql":
                    await self._index_labels(
                        connection, cluster=cluster, rtype=rtype, upserts=upserts, deletes=deletes
                    )

        await self._retrying(transaction, what=f"apply {len(changes)} changes to {cluster}/{rtype}")
        await self._maybe_analyze(len(upserts) + len(deletes))

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
                await connection.exec_driver_sql("ANALYZE resources")
        logger.debug("refreshed planner statistics after %d rows", self._rows_written)

    async def resource_versions(self, *, cluster: str, rtype: ResourceType) -> dict[str, str]:
        """``namespace/name`` (or ``name``) -> stored member resourceVersion."""
        query = sa.select(
            resources.c.namespace, resources.c.name, resources.c.resource_version
        ).where(*_scope(resources, cluster, rtype))

        async def read() -> dict[str, str]:
            async with self.engine.connect() as connection:
                rows = await connection.execute(query)
                return {
                    (f"{namespace}/{name}" if namespace else name): rv
                    for namespace, name, rv in rows
                }

        return await self._retrying(read, what=f"read resource versions of {cluster}/{rtype}")

    async def delete_cluster(self, cluster: str, *, rtype: ResourceType | None = None) -> int:
        """Remove every row of ``cluster`` (or only of one of its resource types)."""
        statement = sa.delete(resources).where(*_scope(resources, cluster, rtype))
        labels = sa.delete(resource_labels).where(*_scope(resource_labels, cluster, rtype))
        catalog = sa.delete(resource_types).where(*_scope(resource_types, cluster, rtype))
        health = sa.delete(cluster_health).where(cluster_health.c.cluster == cluster)

        async def delete() -> int:
            async with self.engine.begin() as connection:
                if self.dialect == "mysql":
                    await connection.execute(labels)
                await connection.execute(catalog)
                if rtype is None:
                    await connection.execute(health)
                return (await connection.execute(statement)).rowcount

        return await self._retrying(delete, what=f"delete rows of cluster {cluster}")

    async def _index_labels(
        self,
        connection: AsyncConnection,
        *,
        cluster: str,
        rtype: ResourceType,
        upserts: list[Upsert],
        deletes: list[Delete],
    ) -> None:
        """Replace the label rows of every object in the batch (MySQL only)."""
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
        self,
        connection: AsyncConnection,
        *,
        cluster: str,
        rtype: ResourceType,
        deletes: list[Delete],
    ) -> None:
        keys = [d.key for d in deletes]
        await self._delete_keys(connection, resources, cluster=cluster, rtype=rtype, keys=keys)

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
        self,
        connection: AsyncConnection,
        *,
        cluster: str,
        rtype: ResourceType,
        upserts: list[Upsert],
    ) -> None:
        synced_at = _now()
        if self.dialect == "postgresql":
            await self._postgres_copy(connection, upserts)
            await connection.execute(
                _POSTGRES_UPSERT,
                {
                    "group": rtype.group,
                    "version": rtype.version,
                    "resource": rtype.resource,
                    "kind": rtype.kind,
                    "cluster": cluster,
                    "synced_at": synced_at,
                },
            )
            return
        if self.dialect == "sqlite":
            await self._sqlite_upsert(
                connection, cluster=cluster, rtype=rtype, upserts=upserts, synced_at=synced_at
            )
            return
        rows = [
            {
                "group": rtype.group,
                "version": rtype.version,
                "resource": rtype.resource,
                "kind": rtype.kind,
                "cluster": cluster,
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
            for u in upserts
        ]
        await connection.execute(self._mysql_upsert_statement(), rows)

    async def _sqlite_upsert(
        self,
        connection: AsyncConnection,
        *,
        cluster: str,
        rtype: ResourceType,
        upserts: list[Upsert],
        synced_at: datetime,
    ) -> None:
        # Plain tuples straight to sqlite3's executemany: SQLAlchemy's per-row parameter
        # processing cost more than SQLite's own work (write ratio 0.42 -> see bench).
        # Timestamps use SQLAlchemy's SQLite storage format so reads parse them back.
        synced = synced_at.strftime(_SQLITE_TIME)
        constant = (rtype.group, rtype.version, rtype.resource, rtype.kind, cluster)
        rows = [
            (
                *constant,
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
            for u in upserts
        ]
        await connection.exec_driver_sql(_SQLITE_UPSERT, rows)

    async def _postgres_copy(self, connection: AsyncConnection, upserts: list[Upsert]) -> None:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        async with driver.cursor() as cursor:
            # Every batch: a table created in a transaction that rolls back is gone again, and
            # IF NOT EXISTS costs one round trip.
            await cursor.execute(_POSTGRES_STAGING)
            async with cursor.copy(_POSTGRES_COPY) as copy:
                copy.set_types(_POSTGRES_COPY_TYPES)
                for u in upserts:
                    await copy.write_row(
                        (
                            u.namespace,
                            u.name,
                            u.uid,
                            u.owner_uid,
                            u.resource_version,
                            u.created_at,
                            u.deleted_at,
                            u.labels.decode() if u.labels else None,
                            u.object,
                        )
                    )

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

    async def _retrying(self, operation: Callable[[], Awaitable[T]], *, what: str) -> T:
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return await operation()
            except DBAPIError as error:
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
