"""SQLite: one writer at a time, statements straight to sqlite3's executemany, sampled ANALYZE."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from clusterpedia.gvr import ResourceType
from clusterpedia.storage.dialects.base import (
    LOG_COLUMNS,
    QUOTED_LOG_COLUMNS,
    Dialect,
    Queries,
    StampedGroup,
    json_path,
    unique,
)
from clusterpedia.storage.schema import resources
from clusterpedia.storage.selection import FieldPath, Index, Key

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


R = resources.c


def _scalar(source: ColumnElement[Any], path: Any) -> ColumnElement[Any]:
    """The scalar at ``path`` in ``source`` as text; booleans as ``true``/``false``."""
    return sa.case(
        (sa.func.json_type(source, path) == "true", sa.literal("true")),
        (sa.func.json_type(source, path) == "false", sa.literal("false")),
        else_=sa.cast(sa.func.json_extract(source, path), sa.Text),
    )


def like_to_glob(pattern: str) -> str:
    """A LIKE pattern (``%``, ``_``, ``\\`` escapes) as the equivalent GLOB pattern."""
    out = []
    characters = iter(pattern)
    for char in characters:
        if char == "\\":
            char = next(characters, "\\")
            out.append(f"[{char}]" if char in "*?[" else char)
        elif char == "%":
            out.append("*")
        elif char == "_":
            out.append("?")
        elif char in "*?[":
            out.append(f"[{char}]")
        else:
            out.append(char)
    return "".join(out)


class SQLiteQueries(Queries):
    """``json_extract``/``json_type``; nested ``json_each`` walks wildcards."""

    name = "sqlite"

    def scalar_text(self, path: FieldPath) -> ColumnElement[Any]:
        return _scalar(R.object, sa.literal(json_path(path.segments)))

    def wildcard_exists(self, path: FieldPath) -> ColumnElement[bool]:
        return self._elements(path, values=None)

    def wildcard_matches(
        self, path: FieldPath, values: list[str], *, negate: bool
    ) -> ColumnElement[bool]:
        matches = self._elements(path, values=values)
        return sa.not_(matches) if negate else matches

    def _elements(self, path: FieldPath, *, values: list[str] | None) -> ColumnElement[bool]:
        """Nested ``json_each`` over every wildcard of ``path``."""
        source: ColumnElement[Any] = R.object
        current: list[Key | Index] = []
        tables = []
        for segment in path.segments:
            if isinstance(segment, Index) and segment.index is None:
                table = sa.func.json_each(
                    source, sa.literal(json_path(tuple(current)))
                ).table_valued("value", name=unique("j"))
                tables.append(table)
                source, current = table.c.value, []
            else:
                current.append(segment)
        tail = sa.literal(json_path(tuple(current)))
        condition: ColumnElement[bool] = sa.func.json_type(source, tail).is_not(None)
        if values is not None:
            condition = _scalar(source, tail).in_(values)
        select = sa.select(1).select_from(tables[0])
        for table in tables[1:]:
            select = select.join(table, sa.true())
        return sa.exists(select.where(condition))

    def label_number(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        # An integer only if it survives the round trip through INTEGER.
        as_int = sa.cast(text, sa.Integer)
        return sa.case((sa.cast(as_int, sa.Text) == text, as_int))

    def like(self, operand: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        """SQLite's LIKE ignores ASCII case: the pattern becomes a GLOB (which does not)."""
        return operand.op("GLOB", is_comparison=True)(sa.literal(like_to_glob(pattern)))


class SQLite(Dialect):
    name = "sqlite"
    queries = SQLiteQueries()
    # A transaction that read first and then writes fails at once (SQLITE_BUSY, no busy wait)
    # whenever another one committed meanwhile. With a member of 250 types, 250 workers
    # retried into each other for minutes; taking turns costs nothing the database would not
    # have serialised anyway.
    serial_writes = True
    # Sampled statistics: enough for index choice, and cheap at any table size. Without them
    # SQLite walks the primary key for ORDER BY instead of using the owner index.
    analyze_statements = ("PRAGMA analysis_limit=1000", "ANALYZE")

    @classmethod
    def configure(cls, url: URL, options: dict[str, Any]) -> URL:
        return url  # a file: no connection to check before use

    @staticmethod
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets readers run beside the single writer; NORMAL sync is durable in WAL mode except
        # for the last transactions on power loss; busy_timeout makes writers wait, not fail.
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "busy_timeout=10000",
            "foreign_keys=ON",
            "temp_store=MEMORY",
            # 64 MiB of page cache (the default is 2 MiB): batches touch index pages all over the
            # table, and re-reading them dominated write time at 100k rows (bench/storage.py).
            "cache_size=-65536",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

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
