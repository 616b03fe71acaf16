"""MySQL and MariaDB: LAST_INSERT_ID for the allocation, ON DUPLICATE KEY upserts, a side
table of label rows for selectors, KILL QUERY to interrupt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from clusterpedia.gvr import ResourceType
from clusterpedia.storage.condition import (
    Between,
    Call,
    Column,
    Comparison,
    Condition,
    Constant,
    InList,
    JsonField,
    Junction,
    Like,
    Negation,
    Operand,
    Value,
)
from clusterpedia.storage.dialects.base import (
    LOG_COLUMNS,
    SCOPE_COLUMNS,
    Dialect,
    Queries,
    StampedGroup,
    json_path,
    unique,
)
from clusterpedia.storage.query import TypeFilter
from clusterpedia.storage.records import Upsert
from clusterpedia.storage.schema import (
    LABEL_KEY_MAX,
    LABEL_VALUE_MAX,
    resource_labels,
    resources,
)
from clusterpedia.storage.selection import FieldPath, Requirement

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


R = resources.c


def _has_non_ascii(node: Condition | Operand) -> bool:
    """Whether any text value or pattern in the tree lies outside ASCII."""
    if isinstance(node, Value):
        return isinstance(node.value, str) and not node.value.isascii()
    if isinstance(node, Like):
        return not node.pattern.isascii() or _has_non_ascii(node.operand)
    if isinstance(node, Column | JsonField | Constant):
        return False
    if isinstance(node, Junction):
        return any(_has_non_ascii(part) for part in node.parts)
    if isinstance(node, Negation):
        return _has_non_ascii(node.part)
    if isinstance(node, Call):
        return any(_has_non_ascii(arg) for arg in node.args)
    if isinstance(node, Comparison):
        return _has_non_ascii(node.left) or _has_non_ascii(node.right)
    if isinstance(node, InList):
        return any(_has_non_ascii(v) for v in (node.operand, *node.values))
    if isinstance(node, Between):
        return any(_has_non_ascii(v) for v in (node.operand, node.low, node.high))
    return _has_non_ascii(node.operand)


class MySQLQueries(Queries):
    """``JSON_UNQUOTE(JSON_EXTRACT(...))`` compared with ``utf8mb4_bin`` (Kubernetes compares
    case-sensitively); ``JSON_TABLE`` walks wildcards; equality on a label of one type goes
    through the ``resource_labels`` side table."""

    name = "mysql"

    def binary(self, expression: ColumnElement[Any]) -> ColumnElement[Any]:
        return sa.collate(expression, "utf8mb4_bin")

    def scalar_text(self, path: FieldPath) -> ColumnElement[Any]:
        extracted = sa.func.JSON_EXTRACT(R.object, sa.literal(json_path(path.segments)))
        return self.binary(sa.func.JSON_UNQUOTE(extracted))

    def wildcard_exists(self, path: FieldPath) -> ColumnElement[bool]:
        return sa.func.JSON_EXTRACT(R.object, sa.literal(json_path(path.segments))).is_not(None)

    def wildcard_matches(
        self, path: FieldPath, values: list[str], *, negate: bool
    ) -> ColumnElement[bool]:
        # JSON_TABLE has no SQLAlchemy construct: a fixed fragment, every value bound.
        alias, path_param, values_param = unique("jt"), unique("jp"), unique("jv")
        fragment = sa.text(
            f"{'NOT ' if negate else ''}EXISTS (SELECT 1 FROM JSON_TABLE("
            f"JSON_EXTRACT(resources.object, :{path_param}), "
            f"'$[*]' COLUMNS (v LONGTEXT PATH '$')) AS {alias} "
            f"WHERE {alias}.v COLLATE utf8mb4_bin IN :{values_param})"
        ).bindparams(
            sa.bindparam(path_param, json_path(path.segments)),
            sa.bindparam(values_param, values, expanding=True),
        )
        return fragment  # type: ignore[return-value]

    def label(
        self, requirement: Requirement, *, single_type: TypeFilter | None
    ) -> ColumnElement[bool]:
        if requirement.operator == "in" and single_type is not None:
            return self._indexed_label(requirement.key, list(requirement.values), single_type)
        return super().label(requirement, single_type=single_type)

    def _indexed_label(self, key: str, values: list[str], rtype: TypeFilter) -> ColumnElement[bool]:
        """``key in values`` through the resource_labels table."""
        L = resource_labels.c
        matching = sa.select(L.cluster, L.namespace, L.name).where(
            L.group == rtype.group,
            L.version == rtype.version,
            L.resource == rtype.resource,
            L.key == key,
            L.value.in_(values),
        )
        return sa.tuple_(R.cluster, R.namespace, R.name).in_(matching)

    def label_text(self, key: str) -> ColumnElement[Any]:
        extracted = sa.func.JSON_EXTRACT(R.labels, sa.literal(f'$."{key}"'))
        return self.binary(sa.func.JSON_UNQUOTE(extracted))

    def label_number(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        return sa.case((text.op("REGEXP")("^-?[0-9]{1,18}$"), sa.cast(text, sa.BigInteger)))

    def widens(self, condition: Condition) -> bool:
        """MySQL refuses to compare its ASCII columns with text outside ASCII (error 1267):
        such a statement compares them as utf8mb4 instead, at the cost of their indexes."""
        return _has_non_ascii(condition)

    def widened(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return sa.collate(sa.cast(column, mysql_dialect.CHAR(charset="utf8mb4")), "utf8mb4_bin")


class MySQL(Dialect):
    name = "mysql"
    queries = MySQLQueries()

    @classmethod
    def configure(cls, url: URL, options: dict[str, Any]) -> URL:
        options.setdefault("pool_recycle", 3600)  # the server closes idle connections
        options.setdefault("pool_pre_ping", True)
        return url if "charset" in url.query else url.update_query_dict({"charset": "utf8mb4"})

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
