"""Compile a :class:`Query` into SQLAlchemy expressions for one dialect.

Nothing from a request is pasted into SQL: keys and paths were validated by the parsers and are
bound as parameters (JSON paths included); ordering uses a fixed set of columns or validated
field paths. How each database reads JSON, labels and patterns is its backend's
(``storage/dialects/``, the ``Queries`` of each); this module holds what every one shares.

Values compare as strings, as the original does: ``spec.replicas=3`` matches the number 3.
``!=`` and ``notin`` also match objects without the key, as Kubernetes label selectors do; a
field an object lacks compares as ``""``, as Kubernetes field selectors do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from clusterpedia.storage.condition import (
    COMPARE,
    Between,
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
from clusterpedia.storage.dialects import queries_for
from clusterpedia.storage.dialects.base import unique
from clusterpedia.storage.errors import InvalidQuery
from clusterpedia.storage.query import OrderBy, OwnerFilter, Query, TypeFilter
from clusterpedia.storage.schema import resources
from clusterpedia.storage.selection import FieldPath, FieldRequirement, Requirement

R = resources.c
MAX_OWNER_SENIORITY = 8


class Compiler:
    """Builds WHERE and ORDER BY parts of a query for ``dialect``."""

    def __init__(self, dialect: str):
        self.queries = queries_for(dialect)

    def scalar_text(self, path: FieldPath) -> ColumnElement[Any]:
        """The text of the scalar at ``path`` (no wildcards), NULL when missing."""
        return self.queries.scalar_text(path)

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
        if operator in ("in", "notin"):
            matches = text.in_(values) if operator == "in" else text.not_in(values)
            return sa.or_(text.is_(None), matches) if requirement.matches_missing else matches
        raise InvalidQuery(f"field selectors do not support {operator!r}", reason="Invalid")

    def _field_any_element(
        self, path: FieldPath, operator: str, values: list[str]
    ) -> ColumnElement[bool]:
        """Wildcard paths: ``in`` = some element matches; ``notin`` = no element matches."""
        if operator in ("exists", "!exists"):
            present = self.queries.wildcard_exists(path)
            return present if operator == "exists" else sa.not_(present)
        if operator in ("in", "notin"):
            return self.queries.wildcard_matches(path, values, negate=operator == "notin")
        raise InvalidQuery(f"field selectors do not support {operator!r}", reason="Invalid")

    # -- label selectors ------------------------------------------------------------------

    def label_requirement(
        self, requirement: Requirement, *, single_type: TypeFilter | None = None
    ) -> ColumnElement[bool]:
        return self.queries.label(requirement, single_type=single_type)

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
            named = resources.alias(unique("owner"))
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
            level = resources.alias(unique("level"))
            condition = level.c.owner_uid.in_(uids)
            uids = sa.select(level.c.uid).where(level.c.cluster == cluster, condition)
        return R.owner_uid.in_(uids)

    # -- whereSQLStatement ---------------------------------------------------------------

    def condition(self, node: Condition) -> ColumnElement[bool]:
        """A parsed ``whereSQLStatement``: only the row's own columns and JSON, values bound."""
        return self._condition(node, widen=self.queries.widens(node))

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
            matches = self.queries.like(self._operand(node.operand, widen=widen), node.pattern)
            return sa.not_(matches) if node.negated else matches
        assert isinstance(node, IsNull)
        operand = self._operand(node.operand, widen=widen)
        return operand.is_not(None) if node.negated else operand.is_(None)

    def _operand(self, node: Operand, *, widen: bool) -> ColumnElement[Any]:
        if isinstance(node, Column):
            if widen and node.kind == "text":
                return self.queries.widened(R[node.name])
            return R[node.name]
        if isinstance(node, JsonField):
            return self.scalar_text(node.path)
        if isinstance(node, Value):
            return sa.literal(node.value, type_=_VALUE_TYPES[node.kind])
        args = [self._operand(arg, widen=widen) for arg in node.args]
        function: Callable[..., ColumnElement[Any]] = getattr(sa.func, node.function)
        return function(*args)

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
            conditions.append(self.queries.position(R.name, fuzzy) > 0)
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
