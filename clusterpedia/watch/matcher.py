"""A list query's filters, evaluated on one change event in Python.

The same meaning as the SQL the compiler builds (``storage/compiler.py``) for every filter that
can be judged from one object: type, clusters, namespaces, names, fuzzy names, creation time,
label and field selectors. Owner searches need other rows and ``whereSQLStatement`` is SQL, so
a watch refuses them rather than ignore them; so it does any :class:`Query` field it does not
know, by name: a filter added to lists later must not make watches silently return more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields as dataclass_fields
from typing import Any

import orjson

from clusterpedia.storage import (
    ChangeEvent,
    FieldPath,
    FieldRequirement,
    Index,
    InvalidQuery,
    Query,
    Requirement,
    parse_timestamp,
)

EventMatcher = Callable[[ChangeEvent], bool]
_MISSING = object()
# The Query fields the matcher evaluates on each event.
EVALUATED = frozenset(
    {"types", "clusters", "namespaces", "names", "fuzzy_names", "since", "before", "labels",
     "fields"}
)  # fmt: skip
# Fields that say how a list is paged or shaped, not which objects it holds.
NOT_FILTERS = frozenset(
    {"order_by", "limit", "continue_token", "offset", "with_remaining_count", "metadata_only",
     "inject_events"}
)  # fmt: skip
REFUSED = {
    "owner": "searching by owner is not supported with watch",
    "where_sql": "whereSQLStatement is not supported with watch",
}


def _refuse_unevaluated(query: Query) -> None:
    for field in dataclass_fields(query):
        if field.name in EVALUATED or field.name in NOT_FILTERS:
            continue
        if getattr(query, field.name) != field.default:
            raise InvalidQuery(
                REFUSED.get(field.name, f"the filter {field.name} is not supported with watch")
            )


def event_matcher(query: Query) -> EventMatcher:
    """A predicate equal to ``query``'s filters; :class:`InvalidQuery` for filters a watch
    cannot evaluate, and for any it does not know."""
    _refuse_unevaluated(query)
    types = {(t.group, t.version, t.resource) for t in query.types}
    if any(t.version is None or t.resource is None for t in query.types):
        raise InvalidQuery("watch needs one resource type")
    clusters, namespaces, names = set(query.clusters), set(query.namespaces), set(query.names)

    def matches(event: ChangeEvent) -> bool:
        if types and (event.group, event.version, event.resource) not in types:
            return False
        if clusters and event.cluster not in clusters:
            return False
        if namespaces and event.namespace not in namespaces:
            return False
        if names and event.name not in names:
            return False
        if query.fuzzy_names and not all(f in event.name for f in query.fuzzy_names):
            return False
        if query.labels and not all(label_matches(r, event.labels) for r in query.labels):
            return False
        if query.since is not None or query.before is not None:
            metadata = event.parsed.get("metadata") or {}
            created = parse_timestamp(metadata.get("creationTimestamp"))
            if created is None:
                return False
            if query.since is not None and created < query.since:
                return False
            if query.before is not None and created >= query.before:
                return False
        return all(field_matches(r, event.parsed) for r in query.fields)

    return matches


def label_matches(requirement: Requirement, labels: dict[str, Any]) -> bool:
    value = labels.get(requirement.key)
    operator, values = requirement.operator, requirement.values
    if operator == "in":
        return value is not None and value in values
    if operator == "notin":
        return value is None or value not in values
    if operator == "exists":
        return value is not None
    if operator == "!exists":
        return value is None
    number = _integer(value)
    if number is None:
        return False
    return number > int(values[0]) if operator == "gt" else number < int(values[0])


def _integer(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    text = value[1:] if value.startswith("-") else value
    return int(value) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def field_matches(requirement: FieldRequirement, obj: dict[str, Any]) -> bool:
    operator, values = requirement.operator, requirement.values
    found = [_as_text(v) for v in _values_at(obj, requirement.path)]
    present = [v for v in found if v is not None]
    if not present and not requirement.path.has_wildcard and operator in ("in", "notin"):
        return requirement.matches_missing
    if operator == "exists":
        return bool(present)
    if operator == "!exists":
        return not present
    if operator == "in":
        return any(v in values for v in present)
    if operator == "notin":
        return not any(v in values for v in present)
    raise InvalidQuery(f"field selectors do not support {operator!r}", reason="Invalid")


def _values_at(value: Any, path: FieldPath) -> Iterator[Any]:
    """Every value at ``path`` (one for a plain path; one per element through ``[]``)."""
    current: list[Any] = [value]
    for segment in path.segments:
        following: list[Any] = []
        for item in current:
            if isinstance(segment, Index):
                if not isinstance(item, list):
                    continue
                if segment.index is None:
                    following.extend(item)
                elif -len(item) <= segment.index < len(item):
                    following.append(item[segment.index])
            elif isinstance(item, dict) and segment.name in item:
                following.append(item[segment.name])
        current = following
    return iter(current)


def _as_text(value: Any) -> str | None:
    """A JSON value as the databases' text extraction gives it: strings bare, booleans and
    numbers as written, objects and arrays as JSON, null as NULL."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()
