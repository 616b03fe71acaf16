"""SQLite: one writer at a time, statements straight to sqlite3's executemany, sampled ANALYZE."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clusterpedia.gvr import ResourceType
from clusterpedia.storage.dialects.base import (
    LOG_COLUMNS,
    QUOTED_LOG_COLUMNS,
    Dialect,
    StampedGroup,
)
from clusterpedia.storage.schema import resources

# SQLAlchemy's storage format for SQLite timestamps, so reads parse them back.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_UPSERT = """
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
_LOG_INSERT = (
    f"INSERT INTO change_log ({QUOTED_LOG_COLUMNS}) VALUES ({', '.join('?' * len(LOG_COLUMNS))})"
)


class SQLite(Dialect):
    name = "sqlite"
    # A transaction that read first and then writes fails at once (SQLITE_BUSY, no busy wait)
    # whenever another one committed meanwhile. With a member of 250 types, 250 workers
    # retried into each other for minutes; taking turns costs nothing the database would not
    # have serialised anyway.
    serial_writes = True
    # Sampled statistics: enough for index choice, and cheap at any table size. Without them
    # SQLite walks the primary key for ORDER BY instead of using the owner index.
    analyze_statements = ("PRAGMA analysis_limit=1000", "ANALYZE")

    def keys_condition(self, keys: list[tuple[str, str]]) -> Any:
        """SQLite seeks the name index with ``name IN`` but only the (type, cluster) prefix
        with a row-value IN: a superset by name, which the caller filters."""
        return resources.c.name.in_(sorted({name for _, name in keys}))

    async def delete_keys(
        self,
        connection: AsyncConnection,
        table: sa.Table,
        *,
        cluster: str,
        rtype: ResourceType,
        keys: list[tuple[str, str]],
    ) -> None:
        """Each key its own statement of one prepared executemany (in-process and cheap):
        ``(namespace, name) IN (...)`` would scan past the (type, cluster) prefix."""
        statement = (
            f'DELETE FROM {table.name} WHERE "group" = ? AND version = ? AND resource = ?'
            " AND cluster = ? AND namespace = ? AND name = ?"
        )
        scope = (rtype.group, rtype.version, rtype.resource, cluster)
        await connection.exec_driver_sql(statement, [(*scope, *key) for key in keys])

    async def upsert(
        self, connection: AsyncConnection, groups: Sequence[StampedGroup], synced_at: datetime
    ) -> None:
        """Plain tuples straight to sqlite3's executemany: SQLAlchemy's per-row parameter
        processing cost more than SQLite's own work (bench/storage.py)."""
        synced = synced_at.strftime(TIME_FORMAT)
        tuples = [
            (
                *scope,
                u.namespace,
                u.name,
                u.uid,
                u.owner_uid,
                u.resource_version,
                u.created_at.strftime(TIME_FORMAT),
                synced,
                u.deleted_at.strftime(TIME_FORMAT) if u.deleted_at else None,
                u.labels.decode() if u.labels else None,
                u.object.decode(),  # text: a bytes value would be stored as a BLOB
            )
            for scope, _, upserts in groups
            for u in upserts
        ]
        if tuples:
            await connection.exec_driver_sql(_UPSERT, tuples)

    async def log(self, connection: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        full = [(*row[:9], row[9].decode(), row[10].strftime(TIME_FORMAT)) for row in rows]
        await connection.exec_driver_sql(_LOG_INSERT, full)

    async def begin_read_only(self, connection: AsyncConnection) -> None:
        await connection.exec_driver_sql("PRAGMA query_only = ON")

    async def end_read_only(self, connection: AsyncConnection) -> None:
        await connection.exec_driver_sql("PRAGMA query_only = OFF")

    async def interrupt(self, driver: Any) -> None:
        await driver.interrupt()  # sqlite3's interrupt, called at once from this thread
