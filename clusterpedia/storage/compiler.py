"""Compile a :class:`Query` into SQLAlchemy expressions for one dialect.

Nothing from a request is pasted into SQL: keys and paths were validated by the parsers and are
bound as parameters (JSON paths included); ordering uses a fixed set of columns or validated
field paths. Differences between dialects are confined to the small builders below.

JSON access:

- PostgreSQL: objects are ``bytea``; ``convert_from(object, 'UTF8')::jsonb`` parses at query
  time, ``#>>`` extracts a scalar as text, ``jsonb_path_query`` walks list wildcards. Labels
  are ``jsonb`` and use ``@>`` / ``?`` (GIN-indexed).
- MySQL/MariaDB: ``JSON_UNQUOTE(JSON_EXTRACT(...))`` compared with ``utf8mb4_bin`` (Kubernetes
  compares case-sensitively); ``JSON_TABLE`` walks wildcards.
- SQLite: ``json_extract``/``json_type``; nested ``json_each`` walks wildcards.

Values compare as strings, as the original does: ``spec.replicas=3`` matches the number 3.
``!=`` and ``notin`` also match objects without the key, as Kubernetes label selectors do.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from clusterpedia.storage.condition import (
    COMPARE,
    Between,
    Call,
    Column,
    Comparison,
    Condition,
    Constant,
    InList,
    IsNull,
    JsonField,
    Junction,
    Like,
    Negation,
    Operand,
    Value,
)
from clusterpedia.storage.errors import InvalidQuery
from clusterpedia.storage.query import OrderBy, OwnerFilter, Query, TypeFilter
from clusterpedia.storage.schema import resource_labels, resources
from clusterpedia.storage.selection import FieldPath, FieldRequirement, Index, Key, Requirement

R = resources.c
MAX_OWNER_SENIORITY = 8
_names = itertools.count()


def _unique(prefix: str) -> str:
    return f"{prefix}_{next(_names)}"


def _json_path(segments: tuple[Key | Index, ...]) -> str:
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


class _JsonPath(sa.types.UserDefinedType[str]):
    """PostgreSQL's ``jsonpath`` type, for binding paths as parameters."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "jsonpath"


_JSONPATH = _JsonPath()


class Compiler:
    """Builds WHERE and ORDER BY parts of a query for ``dialect``."""

    def __init__(self, dialect: str):
        if dialect not in ("postgresql", "mysql", "sqlite"):
            raise ValueError(f"unsupported dialect {dialect}")
        self.dialect = dialect

    # -- text helpers ---------------------------------------------------------------------

    def _binary(self, expression: ColumnElement[Any]) -> ColumnElement[Any]:
        """Byte-wise comparison and order for extracted JSON text, as for the name columns."""
        if self.dialect == "mysql":
            return sa.collate(expression, "utf8mb4_bin")
        if self.dialect == "postgresql":
            return sa.collate(expression, "C")
        return expression

    def _document(self) -> ColumnElement[Any]:
        if self.dialect == "postgresql":
            return sa.cast(sa.func.convert_from(R.object, "UTF8"), JSONB)
        return R.object

    def scalar_text(self, path: FieldPath) -> ColumnElement[Any]:
        """The text of the scalar at ``path`` (no wildcards), NULL when missing."""
        if self.dialect == "postgresql":
            parts = [s.name if isinstance(s, Key) else str(s.index) for s in path.segments]
            return self._binary(
                self._document().op("#>>", return_type=sa.Text)(
                    sa.cast(sa.literal(parts), sa.ARRAY(sa.Text))
                )
            )
        json_path = sa.literal(_json_path(path.segments))
        if self.dialect == "mysql":
            return self._binary(sa.func.JSON_UNQUOTE(sa.func.JSON_EXTRACT(R.object, json_path)))
        return sa.case(
            (sa.func.json_type(R.object, json_path) == "true", sa.literal("true")),
            (sa.func.json_type(R.object, json_path) == "false", sa.literal("false")),
            else_=sa.cast(sa.func.json_extract(R.object, json_path), sa.Text),
        )

    # -- field selectors ------------------------------------------------------------------

    def field_requirement(self, requirement: FieldRequirement) -> ColumnElement[bool]:
        path, operator, values = requirement.path, requirement.operator, list(requirement.values)
        if path.has_wildcard:
            return self._field_any_element(path, operator, values)
        text = self.scalar_text(path)
        if operator == "exists":
            return text.is_not(None)
        if operator == "!exists":
            return text.is_(None)
        if operator == "in":
            return text.in_(values)
        if operator == "notin":
            return sa.or_(text.is_(None), text.not_in(values))
        raise InvalidQuery(f"field selectors do not support {operator!r}", reason="Invalid")

    def _field_any_element(
        self, path: FieldPath, operator: str, values: list[str]
    ) -> ColumnElement[bool]:
        """Wildcard paths: ``in`` = some element matches; ``notin`` = no element matches."""
        if operator in ("exists", "!exists"):
            present = self._wildcard_exists(path)
            return present if operator == "exists" else sa.not_(present)
        if operator in ("in", "notin"):
            return self._wildcard_matches(path, values, negate=operator == "notin")
        raise InvalidQuery(f"field selectors do not support {operator!r}", reason="Invalid")

    def _wildcard_exists(self, path: FieldPath) -> ColumnElement[bool]:
        json_path = _json_path(path.segments)
        if self.dialect == "postgresql":
            return sa.func.jsonb_path_exists(
                self._document(), sa.cast(sa.literal(json_path), _JSONPATH)
            )
        if self.dialect == "mysql":
            return sa.func.JSON_EXTRACT(R.object, sa.literal(json_path)).is_not(None)
        return self._sqlite_elements(path, values=None)

    def _wildcard_matches(
        self, path: FieldPath, values: list[str], *, negate: bool
    ) -> ColumnElement[bool]:
        """Some element at ``path`` is one of ``values`` (none is, with ``negate``)."""
        json_path = _json_path(path.segments)
        if self.dialect == "mysql":
            # JSON_TABLE has no SQLAlchemy construct: a fixed fragment, every value bound.
            alias, path_param, values_param = _unique("jt"), _unique("jp"), _unique("jv")
            fragment = sa.text(
                f"{'NOT ' if negate else ''}EXISTS (SELECT 1 FROM JSON_TABLE("
                f"JSON_EXTRACT(resources.object, :{path_param}), "
                f"'$[*]' COLUMNS (v LONGTEXT PATH '$')) AS {alias} "
                f"WHERE {alias}.v COLLATE utf8mb4_bin IN :{values_param})"
            ).bindparams(
                sa.bindparam(path_param, json_path),
                sa.bindparam(values_param, values, expanding=True),
            )
            return fragment  # type: ignore[return-value]
        if self.dialect == "postgresql":
            element = sa.func.jsonb_path_query(
                self._document(), sa.cast(sa.literal(json_path), _JSONPATH)
            ).column_valued(_unique("e"))
            # #>> '{}' is the element itself as text: strings unquoted, numbers and booleans
            # as written, so elements compare as scalar fields do.
            text = element.op("#>>", return_type=sa.Text)(sa.literal_column("'{}'::text[]"))
            matches: ColumnElement[bool] = sa.exists(
                sa.select(1).where(self._binary(text).in_(values))
            )
        else:
            matches = self._sqlite_elements(path, values=values)
        return sa.not_(matches) if negate else matches

    def _sqlite_elements(self, path: FieldPath, *, values: list[str] | None) -> ColumnElement[bool]:
        """Nested ``json_each`` over every wildcard of ``path``."""
        source: ColumnElement[Any] = R.object
        current: list[Key | Index] = []
        tables = []
        for segment in path.segments:
            if isinstance(segment, Index) and segment.index is None:
                table = sa.func.json_each(
                    source, sa.literal(_json_path(tuple(current)))
                ).table_valued("value", name=_unique("j"))
                tables.append(table)
                source, current = table.c.value, []
            else:
                current.append(segment)
        tail = sa.literal(_json_path(tuple(current)))
        condition: ColumnElement[bool] = sa.func.json_type(source, tail).is_not(None)
        if values is not None:
            text = sa.case(
                (sa.func.json_type(source, tail) == "true", sa.literal("true")),
                (sa.func.json_type(source, tail) == "false", sa.literal("false")),
                else_=sa.cast(sa.func.json_extract(source, tail), sa.Text),
            )
            condition = text.in_(values)
        select = sa.select(1).select_from(tables[0])
        for table in tables[1:]:
            select = select.join(table, sa.true())
        return sa.exists(select.where(condition))

    # -- label selectors ------------------------------------------------------------------

    def label_requirement(
        self, requirement: Requirement, *, single_type: TypeFilter | None = None
    ) -> ColumnElement[bool]:
        key, operator, values = requirement.key, requirement.operator, list(requirement.values)
        if operator == "in" and single_type is not None and self.dialect == "mysql":
            return self._indexed_label(key, values, single_type)
        if self.dialect == "postgresql":
            labels = sa.type_coerce(R.labels, JSONB)
            if operator in ("in", "notin"):
                any_match = sa.or_(*(labels.contains({key: value}) for value in values))
                return (
                    any_match if operator == "in" else sa.not_(sa.func.coalesce(any_match, False))
                )
            if operator in ("exists", "!exists"):
                present = sa.func.coalesce(labels.has_key(key), False)
                return present if operator == "exists" else sa.not_(present)
            value_text = labels.op("->>", return_type=sa.Text)(sa.literal(key))
            number = sa.case(
                (value_text.op("~")("^-?[0-9]{1,18}$"), sa.cast(value_text, sa.BigInteger))
            )
            return number > int(values[0]) if operator == "gt" else number < int(values[0])

        json_path = sa.literal(f'$."{key}"')
        text: ColumnElement[Any]
        if self.dialect == "mysql":
            text = self._binary(sa.func.JSON_UNQUOTE(sa.func.JSON_EXTRACT(R.labels, json_path)))
        else:
            text = sa.func.json_extract(R.labels, json_path)
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
        if self.dialect == "mysql":
            number = sa.case((text.op("REGEXP")("^-?[0-9]{1,18}$"), sa.cast(text, sa.BigInteger)))
        else:  # SQLite: an integer only if it survives the round trip through INTEGER
            as_int = sa.cast(text, sa.Integer)
            number = sa.case((sa.cast(as_int, sa.Text) == text, as_int))
        return number > int(values[0]) if operator == "gt" else number < int(values[0])

    def _indexed_label(self, key: str, values: list[str], rtype: TypeFilter) -> ColumnElement[bool]:
        """``key in values`` through the resource_labels table (MySQL)."""
        L = resource_labels.c
        matching = sa.select(L.cluster, L.namespace, L.name).where(
            L.group == rtype.group,
            L.version == rtype.version,
            L.resource == rtype.resource,
            L.key == key,
            L.value.in_(values),
        )
        return sa.tuple_(R.cluster, R.namespace, R.name).in_(matching)

    # -- owners ---------------------------------------------------------------------------

    def owner(
        self, owner: OwnerFilter, *, cluster: str, namespaces: tuple[str, ...]
    ) -> ColumnElement[bool]:
        if owner.seniority < 0 or owner.seniority > MAX_OWNER_SENIORITY:
            raise InvalidQuery(f"owner seniority must be between 0 and {MAX_OWNER_SENIORITY}")
        if not (owner.uid.isascii() and owner.name.isascii() and cluster.isascii()):
            return sa.false()  # identifiers are ASCII: nothing can match
        uids: Any
        if owner.uid:
            uids = [owner.uid]
        else:
            named = resources.alias(_unique("owner"))
            ancestors = sa.select(named.c.uid).where(
                named.c.cluster == cluster, named.c.name == owner.name
            )
            if owner.resource is not None:
                ancestors = ancestors.where(
                    named.c.group == (owner.group or ""), named.c.resource == owner.resource
                )
            if namespaces:
                ancestors = ancestors.where(named.c.namespace.in_([*namespaces, ""]))
            uids = ancestors
        # Each level up: the uids of objects whose controller is one of the previous level.
        for _ in range(owner.seniority):
            level = resources.alias(_unique("level"))
            condition = level.c.owner_uid.in_(uids)
            uids = sa.select(level.c.uid).where(level.c.cluster == cluster, condition)
        return R.owner_uid.in_(uids)

    # -- whereSQLStatement ---------------------------------------------------------------

    def condition(self, node: Condition) -> ColumnElement[bool]:
        """A parsed ``whereSQLStatement``: only the row's own columns and JSON, values bound."""
        # MySQL refuses to compare its ASCII columns with text outside ASCII (error 1267);
        # such a statement compares them as utf8mb4 instead, at the cost of their indexes.
        widen = self.dialect == "mysql" and _has_non_ascii(node)
        return self._condition(node, widen=widen)

    def _condition(self, node: Condition, *, widen: bool) -> ColumnElement[bool]:
        if isinstance(node, Junction):
            parts = [self._condition(part, widen=widen) for part in node.parts]
            return sa.and_(*parts) if node.operator == "and" else sa.or_(*parts)
        if isinstance(node, Negation):
            return sa.not_(self._condition(node.part, widen=widen))
        if isinstance(node, Constant):
            return sa.true() if node.value else sa.false()
        if isinstance(node, Comparison):
            left = self._operand(node.left, widen=widen)
            comparison: ColumnElement[bool] = COMPARE[node.operator](
                left, self._operand(node.right, widen=widen)
            )
            return comparison
        if isinstance(node, InList):
            operand = self._operand(node.operand, widen=widen)
            values = [self._operand(value, widen=widen) for value in node.values]
            return operand.not_in(values) if node.negated else operand.in_(values)
        if isinstance(node, Between):
            operand = self._operand(node.operand, widen=widen)
            between = operand.between(
                self._operand(node.low, widen=widen), self._operand(node.high, widen=widen)
            )
            return sa.not_(between) if node.negated else between
        if isinstance(node, Like):
            matches = self._like(self._operand(node.operand, widen=widen), node.pattern)
            return sa.not_(matches) if node.negated else matches
        assert isinstance(node, IsNull)
        operand = self._operand(node.operand, widen=widen)
        return operand.is_not(None) if node.negated else operand.is_(None)

    def _operand(self, node: Operand, *, widen: bool) -> ColumnElement[Any]:
        if isinstance(node, Column):
            if widen and node.kind == "text":
                as_utf8 = sa.cast(R[node.name], mysql.CHAR(charset="utf8mb4"))
                return sa.collate(as_utf8, "utf8mb4_bin")
            return R[node.name]
        if isinstance(node, JsonField):
            return self.scalar_text(node.path)
        if isinstance(node, Value):
            return sa.literal(node.value, type_=_VALUE_TYPES[node.kind])
        args = [self._operand(arg, widen=widen) for arg in node.args]
        function: Callable[..., ColumnElement[Any]] = getattr(sa.func, node.function)
        return function(*args)

    def _like(self, operand: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        """Case-sensitive LIKE everywhere: SQLite's LIKE ignores ASCII case, so there the
        pattern becomes a GLOB (which does not)."""
        if self.dialect != "sqlite":
            return operand.like(pattern, escape="\\")
        return operand.op("GLOB", is_comparison=True)(sa.literal(_like_to_glob(pattern)))

    # -- whole WHERE ----------------------------------------------------------------------

    def type_filter(self, filters: tuple[TypeFilter, ...]) -> ColumnElement[bool] | None:
        if not filters:
            return None
        parts = []
        for f in filters:
            conditions = [R.group == f.group]
            if f.version is not None:
                conditions.append(R.version == f.version)
            if f.resource is not None:
                conditions.append(R.resource == f.resource)
            parts.append(sa.and_(*conditions))
        return parts[0] if len(parts) == 1 else sa.or_(*parts)

    def where(self, query: Query) -> list[ColumnElement[bool]]:
        """Every condition of ``query`` except paging."""
        conditions: list[ColumnElement[bool]] = []
        types = self.type_filter(query.types)
        if types is not None:
            conditions.append(types)
        for column, wanted in (
            (R.cluster, query.clusters),
            (R.namespace, query.namespaces),
            (R.name, query.names),
        ):
            # Identifier columns hold ASCII only (and MySQL refuses to compare them with
            # anything else), so other values cannot match and are left out.
            values = [value for value in wanted if value.isascii()]
            if wanted and not values:
                conditions.append(sa.false())
            elif len(values) == 1:
                conditions.append(column == values[0])
            elif values:
                conditions.append(column.in_(values))
        if not all(fuzzy.isascii() for fuzzy in query.fuzzy_names):
            conditions.append(sa.false())
        for fuzzy in filter(str.isascii, query.fuzzy_names):
            # A case-sensitive substring test with no wildcard characters to escape.
            position = sa.func.strpos if self.dialect == "postgresql" else sa.func.instr
            conditions.append(position(R.name, fuzzy) > 0)
        if query.since is not None:
            conditions.append(R.created_at >= query.since)
        if query.before is not None:
            conditions.append(R.created_at < query.before)
        if query.since is not None and query.before is not None and query.before < query.since:
            raise InvalidQuery("'before' must not be earlier than 'since'")
        if query.owner is not None:
            if len(query.clusters) != 1:
                raise InvalidQuery(
                    "If searching by owner uid or name, then the cluster must be specified"
                )
            conditions.append(
                self.owner(query.owner, cluster=query.clusters[0], namespaces=query.namespaces)
            )
        single = query.types[0] if query.single_type else None
        conditions += [self.label_requirement(r, single_type=single) for r in query.labels]
        conditions += [self.field_requirement(r) for r in query.fields]
        if query.where_sql is not None:
            conditions.append(self.condition(query.where_sql.condition))
        return conditions

    # -- ordering -------------------------------------------------------------------------

    def sort_keys(self, query: Query) -> list[tuple[ColumnElement[Any], bool, str]]:
        """(expression, descending, kind) for every ORDER BY key, ending in a unique tiebreak.

        ``kind`` tells the continue token how to carry the value: text, int or time.
        """
        keys: list[tuple[ColumnElement[Any], bool, str]] = []
        seen: set[str] = set()
        for order in query.order_by:
            keys += self._order_keys(order, seen)
        tiebreak = ["cluster", "namespace", "name"]
        if not query.single_type:
            tiebreak += ["group", "version", "resource"]
        for column in tiebreak:
            if column not in seen:
                seen.add(column)
                keys.append((R[column], False, "text"))
        return keys

    def _order_keys(
        self, order: OrderBy, seen: set[str]
    ) -> list[tuple[ColumnElement[Any], bool, str]]:
        key = order.key
        if isinstance(key, FieldPath):
            if key.has_wildcard:
                raise InvalidQuery(f"cannot order by a list field {key}")
            name = f"field:{key}"
            if name in seen:
                return []
            seen.add(name)
            return [(sa.func.coalesce(self.scalar_text(key), ""), order.descending, "text")]
        if key in seen:
            return []
        seen.add(key)
        if key == "resource_version":
            # Numeric order without casts that fail on odd values: shorter numbers sort first.
            return [
                (sa.func.length(R.resource_version), order.descending, "int"),
                (R.resource_version, order.descending, "text"),
            ]
        return [(R[key], order.descending, "time" if key == "created_at" else "text")]


_VALUE_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    "text": sa.Text(),
    "int": sa.BigInteger(),
    "time": sa.DateTime(),
}


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


def _like_to_glob(pattern: str) -> str:
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
