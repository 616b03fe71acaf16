"""What every database backend provides, with the behaviour most of them share."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from clusterpedia.gvr import ResourceType
from clusterpedia.storage.records import Upsert
from clusterpedia.storage.schema import resources
from clusterpedia.storage.threaded import ThreadedReads

logger = logging.getLogger(__name__)

# The columns every row of a batch shares, in this order: group, version, resource, kind, cluster.
Scope = tuple[str, str, str, str, str]
SCOPE_COLUMNS = ("group", "version", "resource", "kind", "cluster")
# One batch of a group transaction, as the upsert needs it: its scope, whether every object
# is new (nothing stored to conflict with), and its upserts with their resourceVersions stamped.
StampedGroup = tuple[Scope, bool, list[Upsert]]

LOG_COLUMNS = (
    "rv", "type", "group", "version", "resource", "cluster", "namespace", "name", "labels",
    "object", "logged_at",
)  # fmt: skip
QUOTED_LOG_COLUMNS = ", ".join(f'"{c}"' for c in LOG_COLUMNS)  # PostgreSQL and SQLite
ALLOCATE = sa.text("UPDATE change_log_marks SET rv = rv + :n WHERE name = :head RETURNING rv")


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
    # One writer at a time (SQLite): the writer takes turns instead of failing into retries.
    serial_writes = False
    # Label selectors read a side table of (key, value) rows (MySQL has no usable JSON index).
    indexes_labels = False
    # Commits announce the change log's new head to listeners (see :meth:`notifications`).
    pushes_changes = False
    # ``(a, b) > (x, y)`` seeks an index (MySQL's range optimiser prefers the expanded form).
    row_value_seek = True
    # Planner statistics refreshed as the table grows (InnoDB keeps its own).
    analyze_statements: tuple[str, ...] = ()

    def __init__(self, engine: AsyncEngine):
        self.engine = engine

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
