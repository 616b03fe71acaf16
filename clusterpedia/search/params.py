"""Build a :class:`Query` from a request's URL parameters and search labels.

The original's rules, kept so users' scripts and kubeconfigs keep working:

- URL parameters win over the matching ``search.clusterpedia.io/*`` labels;
- a cluster or namespace in the path wins over both;
- labels with other ``clusterpedia.io`` keys are not label selectors
  (``internalstorage.clusterpedia.io/fuzzy-name`` is the only one used);
- list values are split on ``,`` after trimming the whole string.

Where the original silently misbehaves we refuse instead: ``notin``/``!=`` on a search label
(the original treated them as ``in``), ``orderby`` on anything but a known column or a valid
field path (the original pasted it into SQL), and malformed numbers or booleans.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from clusterpedia.search.selectors import (
    parse_field_path,
    parse_field_selector,
    parse_label_selector,
)
from clusterpedia.search.times import parse_search_time
from clusterpedia.search.wheresql import parse_where_sql
from clusterpedia.storage.errors import InvalidQuery
from clusterpedia.storage.query import (
    ORDERABLE_COLUMNS,
    OrderBy,
    OwnerFilter,
    Query,
    TypeFilter,
    WhereSQL,
)
from clusterpedia.storage.selection import Requirement

SEARCH_PREFIX = "search.clusterpedia.io/"
FUZZY_NAME = "internalstorage.clusterpedia.io/fuzzy-name"
MAX_VALUES = 500  # list values per parameter
MAX_PARAMETER_LENGTH = 64 * 1024
MAX_INTEGER = 2**62  # well inside a signed 64-bit column
_DIGITS = re.compile(r"-?[0-9]{1,19}", re.ASCII)
# Each order key is a sort key and a step of the continue condition; the original accepts a
# handful, and 200 field-path keys once kept both cores busy for seconds.
MAX_ORDER_KEYS = 8

# search label suffix -> URL parameter it mirrors
_LABEL_TO_PARAM = {
    "clusters": "clusters",
    "namespaces": "namespaces",
    "names": "names",
    "since": "since",
    "before": "before",
    "owner-uid": "ownerUID",
    "owner-name": "ownerName",
    "owner-gr": "ownerGR",
    "owner-seniority": "ownerSeniority",
    "orderby": "orderby",
    "limit": "limit",
    "size": "limit",  # the name the original's docs give the paging label
    "offset": "offset",
    "with-continue": "withContinue",
    "with-remaining-count": "withRemainingCount",
    "inject-events": "injectEvents",
    "forward": "forward",
}
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def _first(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values[0]) > MAX_PARAMETER_LENGTH:
        raise InvalidQuery(f"parameter {name} is too long")
    return values[0]


def parse_bool(value: str, *, what: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidQuery(f"invalid {what} {value!r}: expected true or false")


def parse_int(value: str, *, what: str, minimum: int = 0) -> int:
    """A decimal integer in ASCII digits (Python's ``int`` also takes full-width digits, ``1_0`` and
    thousands of digits), between ``minimum`` and MAX_INTEGER."""
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        raise InvalidQuery(f"invalid {what} {value[:40]!r}: expected an integer")
    number = int(text)
    if number < minimum or number > MAX_INTEGER:
        raise InvalidQuery(f"invalid {what} {text}: must be between {minimum} and {MAX_INTEGER}")
    return number


def split_list(value: str, *, what: str) -> tuple[str, ...]:
    parts = tuple(part for part in value.strip().split(",") if part)
    if len(parts) > MAX_VALUES:
        raise InvalidQuery(f"too many {what}: at most {MAX_VALUES}")
    return parts


def parse_order_by(items: Sequence[str]) -> tuple[OrderBy, ...]:
    """``["namespace desc", "cluster"]`` -> OrderBy values; unknown keys are refused."""
    if len(items) > MAX_ORDER_KEYS:
        raise InvalidQuery(f"too many orderby keys: at most {MAX_ORDER_KEYS}")
    orders = []
    for item in items:
        words = item.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("desc", "asc")):
            raise InvalidQuery(f"invalid orderby {item!r}: use 'field' or 'field desc'")
        field, descending = words[0], len(words) == 2 and words[1] == "desc"
        if field in ORDERABLE_COLUMNS:
            orders.append(OrderBy(key=field, descending=descending))
        elif "." in field or "[" in field:
            orders.append(OrderBy(key=parse_field_path(field), descending=descending))
        else:
            raise InvalidQuery(
                f"invalid orderby {field!r}: use one of {', '.join(ORDERABLE_COLUMNS)} "
                "or a field path such as metadata.labels.app"
            )
    return tuple(orders)


def _owner_gr(value: str) -> tuple[str, str]:
    """``deployments.apps`` -> (group "apps", resource "deployments"); ``nodes`` -> core."""
    resource, _, group = value.partition(".")
    if not resource:
        raise InvalidQuery(f"invalid ownerGR {value!r}: use resource.group, e.g. deployments.apps")
    return group, resource


def _where_sql(params: Mapping[str, Sequence[str]]) -> WhereSQL | None:
    statement = _first(params, "whereSQLStatement")
    json_params = _first(params, "whereSQLJSONParams")
    if statement is None:
        if json_params is not None or params.get("whereSQLParam"):
            raise InvalidQuery(
                "whereSQLParam and whereSQLJSONParams need whereSQLStatement", reason="Invalid"
            )
        if params.get("whereSQL"):
            raise InvalidQuery(
                "raw whereSQL is not supported; use whereSQLStatement with parameters",
                reason="Invalid",
            )
        return None
    values: list[Any]
    if json_params is not None:
        try:
            values = orjson.loads(base64.b64decode(json_params, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidQuery(
                "whereSQLJSONParams must be base64 of a JSON array", reason="Invalid"
            ) from None
        if not isinstance(values, list) or any(isinstance(v, dict | list) for v in values):
            raise InvalidQuery(
                "whereSQLJSONParams must be a JSON array of scalars", reason="Invalid"
            )
    else:
        values = list(params.get("whereSQLParam", ()))
    return WhereSQL(statement=statement, condition=parse_where_sql(statement, values))


# URL parameters only the storage answers (a member would ignore them, and answer as if asked
# for everything): a request sent on to a member with one is refused.
SEARCH_PARAMETERS = (frozenset(_LABEL_TO_PARAM.values()) - {"limit", "forward"}) | {
    "whereSQL",
    "whereSQLStatement",
    "whereSQLParam",
    "whereSQLJSONParams",
    "onlyMetadata",
}
FORWARD_LABEL = SEARCH_PREFIX + "forward"


def forward_requested(params: Mapping[str, Sequence[str]]) -> bool:
    """The request asks to be answered by the member: ``forward=true`` (the
    ``X-Clusterpedia-Forward: true`` header stands for it) or the original's
    ``search.clusterpedia.io/forward`` label, with any value."""
    forward = _first(params, "forward")
    if forward is not None and parse_bool(forward, what="forward"):
        return True
    selector = _first(params, "labelSelector") or ""
    return FORWARD_LABEL in selector and any(
        requirement.key == FORWARD_LABEL for requirement in parse_label_selector(selector)
    )


def forwarded_query(params: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """The query a request sent on to a member carries: the forward markers taken out;
    a search parameter or label refused (the member would read a search label as a label
    no object has, and a search parameter not at all)."""
    kept: list[tuple[str, str]] = []
    for name, values in params.items():
        if name == "forward":
            continue
        if name in SEARCH_PARAMETERS:
            raise InvalidQuery(
                f"{name} is a search parameter, answered from storage only; this request is "
                "answered by the member, which does not know it"
            )
        if name == "labelSelector":
            values = [_member_selector(value) for value in values]
            values = [value for value in values if value]
        kept += [(name, value) for value in values]
    return kept


def _member_selector(selector: str) -> str:
    """``selector`` without the forward label, written back as Kubernetes writes one."""
    written = []
    for requirement in parse_label_selector(selector):
        key = requirement.key
        if key == FORWARD_LABEL:
            continue
        if key.startswith(SEARCH_PREFIX) or key == FUZZY_NAME:
            raise InvalidQuery(
                f"{key} is a search label, answered from storage only; this request is "
                "answered by the member, which would read it as a label no object has"
            )
        values = ",".join(requirement.values)
        written.append(
            {
                "exists": key,
                "!exists": f"!{key}",
                "in": f"{key}={values}" if len(requirement.values) == 1 else f"{key} in ({values})",
                "notin": f"{key} notin ({values})",
                "gt": f"{key}>{values}",
                "lt": f"{key}<{values}",
            }[requirement.operator]
        )
    return ",".join(written)


def query_from_request(
    params: Mapping[str, Sequence[str]],
    *,
    types: tuple[TypeFilter, ...] = (),
    cluster: str | None = None,
    namespace: str | None = None,
) -> Query:
    """The query a list request asks for; raises :class:`InvalidQuery` on any bad input."""
    labels: list[Requirement] = []
    fuzzy: list[str] = []
    from_labels: dict[str, list[str]] = {}
    selector = _first(params, "labelSelector")
    for requirement in parse_label_selector(selector) if selector else []:
        if requirement.key.startswith(SEARCH_PREFIX):
            suffix = requirement.key.removeprefix(SEARCH_PREFIX)
            if suffix not in _LABEL_TO_PARAM:
                raise InvalidQuery(f"unknown search label {requirement.key!r}")
            if suffix == "forward":
                continue  # any form: forward_requested (below) reads it
            if requirement.operator != "in":
                raise InvalidQuery(
                    f"search label {requirement.key} only supports '=', '==' and 'in'"
                )
            parameter = _LABEL_TO_PARAM[suffix]
            if parameter in from_labels:
                raise InvalidQuery(
                    f"search label {requirement.key} repeats another label for {parameter}"
                )
            from_labels[parameter] = list(requirement.values)
        elif requirement.key == FUZZY_NAME:
            if requirement.operator != "in":
                raise InvalidQuery(f"{FUZZY_NAME} only supports '=', '==' and 'in'")
            fuzzy += [value for value in requirement.values if value]
        elif "clusterpedia.io" in requirement.key:
            continue  # the original ignores other clusterpedia.io keys too
        else:
            labels.append(requirement)

    def value(name: str) -> str | None:
        """URL parameter first, then the search label (its values joined)."""
        url = _first(params, name)
        if url is not None:
            return url
        label_values = from_labels.get(name)
        return ",".join(label_values) if label_values is not None else None

    clusters = (cluster,) if cluster else split_list(value("clusters") or "", what="clusters")
    namespaces = (
        (namespace,) if namespace else split_list(value("namespaces") or "", what="namespaces")
    )
    since, before = value("since"), value("before")

    owner = None
    owner_uid, owner_name = value("ownerUID"), value("ownerName")
    if owner_uid or owner_name:
        seniority = value("ownerSeniority")
        owner_gr = value("ownerGR")
        group, resource = _owner_gr(owner_gr) if owner_gr else (None, None)
        owner = OwnerFilter(
            uid=owner_uid or "",
            name="" if owner_uid else (owner_name or ""),
            group=group,
            resource=resource,
            seniority=parse_int(seniority, what="ownerSeniority") if seniority else 0,
        )

    if _first(params, "orderby") is not None:
        orders = parse_order_by(split_list(_first(params, "orderby") or "", what="orderby"))
    else:  # label form: name_desc
        orders = parse_order_by(
            [
                v[: -len("_desc")] + " desc" if v.endswith("_desc") else v
                for v in from_labels.get("orderby", [])
            ]
        )

    if forward_requested(params):
        # The reach-through layer sends these to the member; one that got here has no member.
        raise InvalidQuery(
            "forwarding to a member (search.clusterpedia.io/forward, X-Clusterpedia-Forward) "
            "needs the member: .../resources/clusters/<cluster>/..."
        )
    limit = value("limit")
    offset = value("offset")
    inject = value("injectEvents")
    remaining = value("withRemainingCount")
    with_continue = value("withContinue")
    if with_continue is not None:
        parse_bool(with_continue, what="withContinue")  # accepted; continue is always returned
    fields = _first(params, "fieldSelector")
    only_metadata = _first(params, "onlyMetadata")

    query = Query(
        types=types,
        clusters=clusters,
        namespaces=namespaces,
        names=split_list(value("names") or "", what="names"),
        fuzzy_names=tuple(fuzzy),
        since=parse_search_time(since, what="since") if since else None,
        before=parse_search_time(before, what="before") if before else None,
        owner=owner,
        labels=tuple(labels),
        fields=tuple(parse_field_selector(fields)) if fields else (),
        order_by=orders,
        where_sql=_where_sql(params),
        limit=(parse_int(limit, what="limit") or None) if limit else None,
        continue_token=_first(params, "continue") or None,
        offset=parse_int(offset, what="offset") if offset else None,
        with_remaining_count=parse_bool(remaining, what="withRemainingCount")
        if remaining
        else False,
        metadata_only=parse_bool(only_metadata, what="onlyMetadata") if only_metadata else False,
        inject_events=parse_bool(inject, what="injectEvents") if inject else False,
    )
    if query.since and query.before and query.before < query.since:
        raise InvalidQuery("'before' must not be earlier than 'since'")
    if query.owner is not None and len(query.clusters) != 1:
        raise InvalidQuery("If searching by owner uid or name, then the cluster must be specified")
    return query
