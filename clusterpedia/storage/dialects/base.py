"""What every database backend provides, with the behaviour most of them share."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from clusterpedia.gvr import ResourceType
from clusterpedia.storage.condition import Condition
from clusterpedia.storage.query import TypeFilter
from clusterpedia.storage.records import Upsert
from clusterpedia.storage.schema import resources
from clusterpedia.storage.selection import FieldPath, Index, Key, Requirement
from clusterpedia.storage.threaded import ThreadedReads

logger = logging.getLogger(__name__)

# The columns every row of a batch shares, in this order: group, version, resource, kind, cluster.
BatchKey = tuple[str, str, str, str, str]
SCOPE_COLUMNS = ("group", "version", "resource", "kind", "cluster")
# One batch of a group transaction, as the upsert needs it: its scope, whether every object
# is new (nothing stored to conflict with), and its upserts with their resourceVersions stamped.
StampedGroup = tuple[BatchKey, bool, list[Upsert]]

LOG_COLUMNS = (
    "rv", "type", "group", "version", "resource", "cluster", "namespace", "name", "labels",
    "object", "logged_at",
)  # fmt: skip
QUOTED_LOG_COLUMNS = ", ".join(f'"{c}"' for c in LOG_COLUMNS)  # PostgreSQL and SQLite
ALLOCATE = sa.text("UPDATE change_log_marks SET rv = rv + :n WHERE name = :head RETURNING rv")


R = resources.c
_names = itertools.count()


def unique(prefix: str) -> str:
    """A name no other part of the statement uses (aliases, bind parameters)."""
    return f"{prefix}_{next(_names)}"


def json_path(segments: tuple[Key | Index, ...]) -> str:
    """``$."a"."b"[0]`` / ``$."a"[*]`` for MySQL, SQLite and PostgreSQL jsonpath.

    Keys were validated as qualified names (no quotes or backslashes), so quoting is safe.
    """
    out = ["$"]
    for segment in segments:
        if isinstance(segment, Key):
            out.append(f'."{segment.name}"')
        else:
            out.append("[*]" if segment.index is None else f"[{segment.index}]")
    return "".join(out)


class Queries:
    """How one database reads JSON, labels and patterns: the dialect half of the query
    compiler (``storage/compiler.py`` holds what all share). Needs no engine, so the SQL of
    every dialect can be compiled offline."""

    name = ""

    def binary(self, expression: ColumnElement[Any]) -> ColumnElement[Any]:
        """Byte-wise comparison and order for extracted JSON text, as for the name columns."""
        return expression

    def document(self) -> ColumnElement[Any]:
        """The stored object as this database's JSON."""
        return R.object

    def scalar_text(self, path: FieldPath) -> ColumnElement[Any]:
        """The text of the scalar at ``path`` (no wildcards), NULL when missing."""
        raise NotImplementedError

    def wildcard_exists(self, path: FieldPath) -> ColumnElement[bool]:
        raise NotImplementedError

    def wildcard_matches(
        self, path: FieldPath, values: list[str], *, negate: bool
    ) -> ColumnElement[bool]:
        """Some element at ``path`` is one of ``values`` (none is, with ``negate``)."""
        raise NotImplementedError

    def label(
        self, requirement: Requirement, *, single_type: TypeFilter | None
    ) -> ColumnElement[bool]:
        """A label requirement over the labels' JSON text (SQLite and MySQL)."""
        key, operator, values = requirement.key, requirement.operator, list(requirement.values)
        text = self.label_text(key)
        if operator == "in":
            # No JSON index here: a substring test on the stored labels text (written by
            # orjson with no spaces, keys and values free of quotes) skips the JSON parse of
            # rows that cannot match; the exact predicate then decides.
            needles = [orjson.dumps({key: value})[1:-1].decode() for value in values]
            prefilter = sa.or_(*(sa.func.instr(R.labels, needle) > 0 for needle in needles))
            return sa.and_(prefilter, text.in_(values))
        if operator == "notin":
            return sa.or_(text.is_(None), text.not_in(values))
        if operator == "exists":
            return text.is_not(None)
        if operator == "!exists":
            return text.is_(None)
        number = self.label_number(text)
        return number > int(values[0]) if operator == "gt" else number < int(values[0])

    def label_text(self, key: str) -> ColumnElement[Any]:
        return sa.func.json_extract(R.labels, sa.literal(f'$."{key}"'))

    def label_number(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        """``text`` as a 64-bit integer, NULL when it is not one."""
        raise NotImplementedError

    def like(self, operand: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        """A case-sensitive LIKE."""
        return operand.like(pattern, escape="\\")

    def position(self, column: ColumnElement[Any], needle: str) -> ColumnElement[Any]:
        """Where ``needle`` starts in ``column`` (1-based; 0 when absent)."""
        return sa.func.instr(column, needle)

    def widens(self, condition: Condition) -> bool:
        """Whether a whereSQLStatement's text columns must be compared as full Unicode."""
        return False

    def widened(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return column


def scope_of(table: sa.Table, cluster: str, rtype: ResourceType | None) -> list[Any]:
    """Conditions selecting one cluster's rows (of one resource type) in ``table``."""
    conditions = [table.c.cluster == cluster]
    if rtype is not None:
        conditions += [
            table.c.group == rtype.group,
            table.c.version == rtype.version,
            table.c.resource == rtype.resource,
        ]
    return conditions


class Dialect:
    """A database's way of doing what the storage needs; subclasses override what differs."""

    name = ""
    queries = Queries()
    # One writer at a time (SQLite): the writer takes turns instead of failing into retries.
    serial_writes = False
    # Label selectors read a side table of (key, value) rows (MySQL has no usable JSON index).
    indexes_labels = False
    # Commits announce the change log's new head to listeners (see :meth:`notifications`).
    pushes_changes = False
    # ``(a, b) > (x, y)`` seeks an index (MySQL's range optimiser prefers the expanded form).
    row_value_seek = True
    # Whether its text holds a NUL character (PostgreSQL's cannot, nor can a NUL be bound).
    text_holds_nul = True
    # Planner statistics refreshed as the table grows (InnoDB keeps its own).
    analyze_statements: tuple[str, ...] = ()

    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    # -- connections ----------------------------------------------------------------------

    @classmethod
    def configure(cls, url: URL, options: dict[str, Any]) -> URL:
        """The engine's URL, with ``options`` (pool settings) adjusted in place."""
        options.setdefault("pool_pre_ping", True)
        return url

    @staticmethod
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        """Session settings for every new connection."""

    @classmethod
    async def after_create(cls, connection: AsyncConnection) -> None:
        """Tuning of a schema just created (in its transaction)."""

    @classmethod
    async def upgrade(cls, connection: AsyncConnection, found: int) -> None:
        """Repairs this database's rows need when upgrading from schema ``found`` (in the
        upgrade's transaction)."""

    # -- writes ---------------------------------------------------------------------------

    async def allocate(self, connection: AsyncConnection, count: int, *, head: str) -> int:
        """Add ``count`` to the change log's head row; return the new head. Locks the row
        until the transaction ends."""
        return int((await connection.execute(ALLOCATE, {"n": count, "head": head})).scalar_one())

    def keys_condition(self, keys: list[tuple[str, str]]) -> Any:
        """Rows among ``keys`` (namespace, name), or a superset the caller filters."""
        return sa.tuple_(resources.c.namespace, resources.c.name).in_(keys)

    async def delete_keys(
        self,
        connection: AsyncConnection,
        table: sa.Table,
        *,
        cluster: str,
        rtype: ResourceType,
        keys: list[tuple[str, str]],
    ) -> None:
        """Delete the rows of ``keys`` of one cluster and type from ``table``."""
        await connection.execute(
            sa.delete(table).where(
                *scope_of(table, cluster, rtype),
                sa.tuple_(table.c.namespace, table.c.name).in_(keys),
            )
        )

    async def upsert(
        self, connection: AsyncConnection, groups: Sequence[StampedGroup], synced_at: datetime
    ) -> None:
        """Insert or update the stamped upserts of every batch of a group in one statement."""
        raise NotImplementedError

    async def index_labels(
        self,
        connection: AsyncConnection,
        *,
        cluster: str,
        rtype: ResourceType,
        upserts: list[Upsert],
        deleted: list[tuple[str, str]],
    ) -> None:
        """Keep the label side table in step (only where :attr:`indexes_labels`)."""

    async def log(self, connection: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        """Append ``rows`` (one value per ``LOG_COLUMNS``) to the change log."""
        raise NotImplementedError

    # -- reads ----------------------------------------------------------------------------

    def metadata_of(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """The ``metadata`` member of a stored object, as JSON text."""
        return sa.func.json_extract(column, sa.literal("$.metadata"))

    def threaded_reads(self) -> ThreadedReads | None:
        """Readers on threads with the sync driver, where that is faster (PostgreSQL)."""
        return None

    async def begin_read_only(self, connection: AsyncConnection) -> None:
        await connection.exec_driver_sql("SET TRANSACTION READ ONLY")

    async def end_read_only(self, connection: AsyncConnection) -> None:
        """After the read-only transaction was rolled back."""

    async def interrupt(self, driver: Any) -> None:
        """Stop the statement running on ``driver`` (the raw connection of a cancelled read)."""
        raise NotImplementedError

    # -- change notifications -------------------------------------------------------------

    def notifications(self) -> AsyncIterator[int | None]:
        """Each head the writers' commits announce; ``None`` whenever some may have been
        missed (on every (re)connection). Only where :attr:`pushes_changes`."""
        raise NotImplementedError(f"{self.name} does not announce commits: poll the log")
