"""MySQL and MariaDB: LAST_INSERT_ID for the allocation, ON DUPLICATE KEY upserts, a side
table of label rows for selectors, KILL QUERY to interrupt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from clusterpedia.gvr import ResourceType
from clusterpedia.storage.dialects.base import LOG_COLUMNS, SCOPE_COLUMNS, Dialect, StampedGroup
from clusterpedia.storage.records import Upsert
from clusterpedia.storage.schema import (
    LABEL_KEY_MAX,
    LABEL_VALUE_MAX,
    resource_labels,
    resources,
)

# MariaDB has no UPDATE ... RETURNING: LAST_INSERT_ID(expr) remembers the value per session.
_ALLOCATE = sa.text("UPDATE change_log_marks SET rv = LAST_INSERT_ID(rv + :n) WHERE name = :head")
_LABEL_COLUMNS = ("group", "version", "resource", "cluster", "namespace", "name", "key", "value")
# Driver-level SQL: label rows are many and tiny, so no per-row parameter processing.
# Idempotent, so a wrong "is_new" hint can never fail a batch.
_LABEL_INSERT = (
    f"INSERT INTO resource_labels ({', '.join(f'`{c}`' for c in _LABEL_COLUMNS)})"
    f" VALUES ({', '.join(['%s'] * len(_LABEL_COLUMNS))})"
    " ON DUPLICATE KEY UPDATE `value` = VALUES(`value`)"
)
_LOG_INSERT = (
    f"INSERT INTO change_log ({', '.join(f'`{c}`' for c in LOG_COLUMNS)})"
    f" VALUES ({', '.join(['%s'] * len(LOG_COLUMNS))})"
)
_UPDATED_COLUMNS = (
    "kind", "uid", "owner_uid", "created_at", "synced_at", "deleted_at", "labels", "object",
)  # fmt: skip


def _upsert_statement() -> sa.Insert:
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


_UPSERT = _upsert_statement()


class MySQL(Dialect):
    name = "mysql"
    indexes_labels = True
    # Its range optimiser handles the expanded OR form of a keyset seek well, the row-value
    # comparison badly.
    row_value_seek = False

    async def allocate(self, connection: AsyncConnection, count: int, *, head: str) -> int:
        await connection.execute(_ALLOCATE, {"n": count, "head": head})
        return int((await connection.exec_driver_sql("SELECT LAST_INSERT_ID()")).scalar_one())

    async def upsert(
        self, connection: AsyncConnection, groups: Sequence[StampedGroup], synced_at: datetime
    ) -> None:
        dicts = [
            {
                **dict(zip(SCOPE_COLUMNS, scope, strict=True)),
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
            for scope, _, upserts in groups
            for u in upserts
        ]
        if dicts:
            await connection.execute(_UPSERT, dicts)

    async def index_labels(
        self,
        connection: AsyncConnection,
        *,
        cluster: str,
        rtype: ResourceType,
        upserts: list[Upsert],
        deleted: list[tuple[str, str]],
    ) -> None:
        """Replace the label rows of every object of one batch."""
        keys = [u.key for u in upserts if not u.is_new] + deleted
        if keys:
            await self.delete_keys(
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
            await connection.exec_driver_sql(_LABEL_INSERT, rows)

    async def log(self, connection: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        full = [(*row[:9], row[9].decode(), row[10]) for row in rows]
        await connection.exec_driver_sql(_LOG_INSERT, full)

    def metadata_of(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return sa.func.JSON_EXTRACT(column, sa.literal("$.metadata"))

    async def interrupt(self, driver: Any) -> None:
        """KILL QUERY from another connection."""
        async with self.engine.connect() as killer:
            await killer.exec_driver_sql(f"KILL QUERY {int(driver.thread_id())}")
