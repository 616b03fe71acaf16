"""PostgreSQL: binary COPY for rows, one upsert from a staging table, NOTIFY with each
allocation, LISTEN for the watch feed, and page reads on threads with the sync driver."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.types.json import Jsonb
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from clusterpedia.backoff import Backoff
from clusterpedia.storage.dialects.base import (
    QUOTED_LOG_COLUMNS,
    Dialect,
    Queries,
    StampedGroup,
    json_path,
    unique,
)
from clusterpedia.storage.query import TypeFilter
from clusterpedia.storage.records import Upsert
from clusterpedia.storage.schema import resources
from clusterpedia.storage.selection import FieldPath, Key, Requirement
from clusterpedia.storage.sql_log import follow as follow_sql_log
from clusterpedia.storage.threaded import ThreadedReads

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "clusterpedia_change_log"

# Rows go into a temporary staging table by binary COPY (psycopg formats COPY rows in C;
# binding arrays of parameters instead spent half the write time in Python array
# formatting), then one INSERT ... SELECT upserts the group's batches.
_STAGING = """
CREATE TEMPORARY TABLE IF NOT EXISTS resources_staging (
    "group" text, version text, resource text, kind text, cluster text,
    namespace text, name text, uid text, owner_uid text, resource_version text,
    created_at timestamp, deleted_at timestamp, labels text, object bytea
) ON COMMIT DELETE ROWS
"""
_COPY = (
    'COPY resources_staging ("group", version, resource, kind, cluster, namespace, name, uid,'
    " owner_uid, resource_version, created_at, deleted_at, labels, object)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = [
    "text", "text", "text", "text", "text", "text", "text", "text", "text", "text",
    "timestamp", "timestamp", "text", "bytea",
]  # fmt: skip
# Every column a query filters or sorts on; not ``object``, whose statistics no plan uses and
# whose sampling would read (and decompress) thousands of objects each time.
_ANALYZE = "ANALYZE resources ({})".format(
    ", ".join(f'"{column.name}"' for column in resources.columns if column.name != "object")
)
_COPY_NEW = (
    'COPY resources ("group", version, resource, kind, cluster, namespace, name, uid, owner_uid,'
    " resource_version, created_at, deleted_at, labels, object, synced_at)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_NEW_TYPES = [
    "text", "text", "text", "text", "text", "text", "text", "text", "text", "text",
    "timestamp", "timestamp", "jsonb", "bytea", "timestamp",
]  # fmt: skip
# One statement for every batch of a group (so staged rows are used once, then go at commit).
_UPSERT = sa.text(
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
_LOG_COPY = f"COPY change_log ({QUOTED_LOG_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_LOG_TYPES = [
    "int8", "text", "text", "text", "text", "text", "text", "text", "text", "bytea", "timestamp",
]  # fmt: skip
# The head's increment and a NOTIFY of the new head (delivered at commit) in one round trip.
_ALLOCATE = sa.text(
    "UPDATE change_log_marks SET rv = rv + :n WHERE name = :head"
    f" RETURNING rv, pg_notify('{NOTIFY_CHANNEL}', rv::text)"
)


async def _copy(
    connection: AsyncConnection, statement: str, types: list[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    """``rows`` by binary COPY on the transaction's own connection (psycopg formats COPY rows
    in C: binding arrays of parameters spent half the write time in Python)."""
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    async with driver.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            await copy.write_row(row)


def _copied(u: Upsert, labels: Any) -> tuple[Any, ...]:
    """An upsert's own columns, in the order both COPY statements name them."""
    return (u.namespace, u.name, u.uid, u.owner_uid, u.resource_version, u.created_at,
            u.deleted_at, labels, u.object)  # fmt: skip


def _labels_text(u: Upsert) -> str | None:
    """Labels for the staging table's ``text`` column (cast to ``jsonb`` by the upsert)."""
    return u.labels.decode() if u.labels else None


def _labels_jsonb(u: Upsert) -> Jsonb | None:
    """Labels for a ``jsonb`` column in binary COPY: the member's JSON bytes as they are. A
    ``str`` given to psycopg's jsonb dumper would be stored as a JSON *string*, which no label
    selector matches."""
    return Jsonb(u.labels, dumps=_as_is) if u.labels else None


def _as_is(document: bytes) -> bytes:
    return document


R = resources.c


class _JsonPath(sa.types.UserDefinedType[str]):
    """PostgreSQL's ``jsonpath`` type, for binding paths as parameters."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "jsonpath"


_JSONPATH = _JsonPath()


class PostgreSQLQueries(Queries):
    """Objects are ``bytea``: ``convert_from(object, 'UTF8')::jsonb`` parses at query time,
    ``#>>`` extracts a scalar as text, ``jsonb_path_query`` walks list wildcards. Labels are
    ``jsonb`` and use ``@>`` / ``?`` (GIN-indexed)."""

    name = "postgresql"

    def binary(self, expression: ColumnElement[Any]) -> ColumnElement[Any]:
        return sa.collate(expression, "C")

    def document(self) -> ColumnElement[Any]:
        return sa.cast(sa.func.convert_from(R.object, "UTF8"), JSONB)

    def scalar_text(self, path: FieldPath) -> ColumnElement[Any]:
        parts = [s.name if isinstance(s, Key) else str(s.index) for s in path.segments]
        return self.binary(
            self.document().op("#>>", return_type=sa.Text)(
                sa.cast(sa.literal(parts), sa.ARRAY(sa.Text))
            )
        )

    def wildcard_exists(self, path: FieldPath) -> ColumnElement[bool]:
        return sa.func.jsonb_path_exists(
            self.document(), sa.cast(sa.literal(json_path(path.segments)), _JSONPATH)
        )

    def wildcard_matches(
        self, path: FieldPath, values: list[str], *, negate: bool
    ) -> ColumnElement[bool]:
        element = sa.func.jsonb_path_query(
            self.document(), sa.cast(sa.literal(json_path(path.segments)), _JSONPATH)
        ).column_valued(unique("e"))
        # #>> '{}' is the element itself as text: strings unquoted, numbers and booleans
        # as written, so elements compare as scalar fields do.
        text = element.op("#>>", return_type=sa.Text)(sa.literal_column("'{}'::text[]"))
        matches: ColumnElement[bool] = sa.exists(sa.select(1).where(self.binary(text).in_(values)))
        return sa.not_(matches) if negate else matches

    def label(
        self, requirement: Requirement, *, single_type: TypeFilter | None
    ) -> ColumnElement[bool]:
        key, operator, values = requirement.key, requirement.operator, list(requirement.values)
        labels = sa.type_coerce(R.labels, JSONB)
        if operator in ("in", "notin"):
            any_match = sa.or_(*(labels.contains({key: value}) for value in values))
            return any_match if operator == "in" else sa.not_(sa.func.coalesce(any_match, False))
        if operator in ("exists", "!exists"):
            present = sa.func.coalesce(labels.has_key(key), False)
            return present if operator == "exists" else sa.not_(present)
        value_text = labels.op("->>", return_type=sa.Text)(sa.literal(key))
        number = sa.case(
            (value_text.op("~")("^-?[0-9]{1,18}$"), sa.cast(value_text, sa.BigInteger))
        )
        return number > int(values[0]) if operator == "gt" else number < int(values[0])

    def position(self, column: ColumnElement[Any], needle: str) -> ColumnElement[Any]:
        return sa.func.strpos(column, needle)


class _BinaryResultCursor(psycopg.AsyncCursor[Any]):
    """Asks PostgreSQL for results in binary format: ``bytea`` objects then arrive as raw
    bytes rather than hex text the client must decode, which halves the cost of a page of
    objects (bench/storage.py)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.format = psycopg.pq.Format.BINARY


class _BinaryResultServerCursor(psycopg.AsyncServerCursor[Any]):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.format = psycopg.pq.Format.BINARY


def prefer_lz4(dbapi_connection: Any) -> None:
    """Compress new values with lz4 in this session. The column's own lz4 setting is not
    enough: the writer stages rows in a temporary table, and PostgreSQL copies an already
    compressed value as it is, so staged rows kept the default pglz, which decompresses
    several times slower on every read."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET default_toast_compression = 'lz4'")
    except Exception:  # a server built without lz4 keeps pglz
        dbapi_connection.rollback()
    finally:
        cursor.close()


class PostgreSQL(Dialect):
    name = "postgresql"
    queries = PostgreSQLQueries()

    @staticmethod
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        driver = dbapi_connection.driver_connection
        driver.cursor_factory = _BinaryResultCursor
        driver.server_cursor_factory = _BinaryResultServerCursor
        prefer_lz4(dbapi_connection)

    @classmethod
    async def after_create(cls, connection: AsyncConnection) -> None:
        """Compress stored objects with lz4 (PostgreSQL >= 14): several times cheaper than
        the default pglz on both write and read (bench/storage.py)."""
        try:
            async with connection.begin_nested():
                await connection.exec_driver_sql(
                    "ALTER TABLE resources ALTER COLUMN object SET COMPRESSION lz4"
                )
        except DBAPIError as error:
            logger.info(
                "lz4 compression unavailable (%s); PostgreSQL's default is used", error.orig
            )

    @classmethod
    async def upgrade(cls, connection: AsyncConnection, found: int) -> None:
        """Before schema 5 the initial list's COPY stored labels as a JSON string: parse it
        back into the object every label selector expects."""
        if found < 5:
            repaired = await connection.exec_driver_sql(
                "UPDATE resources SET labels = (labels #>> '{}')::jsonb"
                " WHERE jsonb_typeof(labels) = 'string'"
            )
            logger.warning(
                "schema %s -> 5: repaired the labels of %d stored objects", found, repaired.rowcount
            )

    pushes_changes = True
    text_holds_nul = False
    analyze_statements = (_ANALYZE,)

    async def allocate(self, connection: AsyncConnection, count: int, *, head: str) -> int:
        return int((await connection.execute(_ALLOCATE, {"n": count, "head": head})).one()[0])

    async def upsert(
        self, connection: AsyncConnection, groups: Sequence[StampedGroup], synced_at: datetime
    ) -> None:
        """Batches hinted all new are copied straight in (a unique key violation then fails
        the transaction, and the writer applies the batches again, trusting no hint)."""
        new = [
            (*scope, *_copied(u, _labels_jsonb(u)), synced_at)
            for scope, all_new, upserts in groups
            if all_new
            for u in upserts
        ]
        if new:
            # Straight into ``resources`` by binary COPY: no staging table and no conflict
            # check, a fifth of PostgreSQL's CPU on an initial sync.
            await _copy(connection, _COPY_NEW, _COPY_NEW_TYPES, new)
        staged = [
            (*scope, *_copied(u, _labels_text(u)))
            for scope, all_new, upserts in groups
            if not all_new
            for u in upserts
        ]
        if staged:
            # Every time: a table created in a transaction that rolls back is gone again, and
            # IF NOT EXISTS costs one round trip.
            await connection.exec_driver_sql(_STAGING)
            await _copy(connection, _COPY, _COPY_TYPES, staged)
            await connection.execute(_UPSERT, {"synced_at": synced_at})

    async def log(self, connection: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        await _copy(connection, _LOG_COPY, _LOG_TYPES, rows)

    def metadata_of(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        document = sa.cast(sa.func.convert_from(column, "UTF8"), JSONB)
        return sa.cast(document.op("->")(sa.literal("metadata")), sa.Text)

    def threaded_reads(self) -> ThreadedReads | None:
        reads = ThreadedReads(self.engine.url)
        follow_sql_log(self.engine.sync_engine, reads.engine)
        return reads

    async def interrupt(self, driver: Any) -> None:
        await driver.cancel_safe(timeout=5)

    async def notifications(self) -> AsyncIterator[int | None]:
        """LISTEN on a connection of its own, reconnecting (with backoff) when it drops."""
        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        backoff = Backoff(0.5, 5.0)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    backoff.reset()
                    yield None  # anything committed before LISTEN took effect
                    async for notify in connection.notifies():
                        try:
                            yield int(notify.payload)
                        except ValueError:
                            yield None
            except asyncio.CancelledError:
                raise
            except Exception as error:
                delay = backoff.next_delay()
                logger.warning(
                    "change log LISTEN connection lost (%s); reconnecting in %.1fs", error, delay
                )
                await asyncio.sleep(delay)
