"""Server-side ``meta.k8s.io/v1`` Tables, with ``CLUSTER`` as the first column.

The only place the API server parses stored objects: a human asked for columns, so each row's
object is read once. Age cells are computed at response time, never cached.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from clusterpedia.apiserver.printers import (
    AGE,
    NAME,
    PRINTERS,
    Column,
    Obj,
    age,
    human_duration,
    parse_time,
)
from clusterpedia.apiserver.status import StatusError
from clusterpedia.storage import CLUSTER_ANNOTATION, PrinterColumn, SyncedType

CLUSTER = Column("Cluster", description="The cluster the object was synced from.")
INCLUDE_OBJECT = ("Metadata", "Object", "None")


def include_object(value: str | None) -> str:
    if not value:
        return "Metadata"
    if value not in INCLUDE_OBJECT:
        raise StatusError(
            400, f"includeObject must be one of {', '.join(INCLUDE_OBJECT)}, not {value!r}"
        )
    return value


class TableBuilder:
    """Columns and rows for one resource type."""

    def __init__(self, synced: SyncedType | None, *, group: str, resource: str, include: str):
        self.include = include
        printer = PRINTERS.get((group, resource))
        self.custom: tuple[PrinterColumn, ...] = ()
        if printer is not None:
            self.columns = [CLUSTER, *([NAME] if printer.name_first else []), *printer.columns]
            self._row = printer.row
            self._name_first = printer.name_first
        elif synced is not None and synced.printer_columns:
            self.custom = synced.printer_columns
            self.columns = [
                CLUSTER,
                NAME,
                *(
                    Column(c.name, _column_type(c.type), c.format, c.priority, c.description)
                    for c in self.custom
                ),
            ]
            self._row = self._custom_row
            self._name_first = True
        else:
            self.columns = [CLUSTER, NAME, AGE]
            self._row = _name_age
            self._name_first = True

    def _custom_row(self, obj: Obj) -> list[Any]:
        cells: list[Any] = [(obj.get("metadata") or {}).get("name")]
        for column in self.custom:
            value = evaluate(column.json_path, obj)
            if column.type == "date" and isinstance(value, str):
                when = parse_time(value)
                value = (
                    human_duration((datetime.now(UTC) - when).total_seconds()) if when else value
                )
            elif isinstance(value, dict | list):
                value = orjson.dumps(value).decode()
            cells.append(value)
        return cells

    def definitions(self) -> list[dict[str, Any]]:
        return [c.definition() for c in self.columns]

    def row(self, data: bytes, *, cluster: str) -> dict[str, Any]:
        return self.row_of(orjson.loads(data), cluster=cluster)

    def row_of(self, obj: Obj, *, cluster: str) -> dict[str, Any]:
        cells = [cluster, *self._row(obj)]
        row: dict[str, Any] = {"cells": cells}
        if self.include == "Object":
            row["object"] = obj
        elif self.include == "Metadata":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata") or {},
            }
        return row

    def table(
        self, rows: Iterable[tuple[bytes, str]], *, list_metadata: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": list_metadata,
            "columnDefinitions": self.definitions(),
            "rows": [self.row(data, cluster=cluster) for data, cluster in rows],
        }


def cluster_of(obj: Obj) -> str:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get(CLUSTER_ANNOTATION, ""))


def _name_age(obj: Obj) -> list[Any]:
    meta = obj.get("metadata") or {}
    return [meta.get("name"), age(meta.get("creationTimestamp"))]


def _column_type(kind: str) -> str:
    return kind if kind in ("integer", "number", "boolean", "date", "string") else "string"


# -- the JSONPath subset CRD printer columns use ------------------------------------------

_STEP = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_\-]+)
      | \[(?P<index>-?\d+)\]
      | \[\?\(@\.(?P<key>[A-Za-z0-9_\-.]+)\s*==\s*(?P<quote>["'])(?P<value>[^"']*)(?P=quote)\)\]
      | \[['"](?P<quoted>[^'"]+)['"]\]""",
    re.VERBOSE,
)


def evaluate(path: str, obj: Any) -> Any:
    """The value at a CRD column's JSONPath (``.spec.replicas``,
    ``.status.conditions[?(@.type=="Ready")].status``); None when absent or unsupported."""
    expression = path.strip()
    if expression.startswith("{") and expression.endswith("}"):
        expression = expression[1:-1]
    expression = expression.removeprefix("$")
    position, current = 0, obj
    while position < len(expression):
        match = _STEP.match(expression, position)
        if match is None:
            return None
        position = match.end()
        if match["field"] is not None or match["quoted"] is not None:
            key = match["field"] if match["field"] is not None else match["quoted"]
            current = current.get(key) if isinstance(current, dict) else None
        elif match["index"] is not None:
            index = int(match["index"])
            current = (
                current[index]
                if isinstance(current, list) and -len(current) <= index < len(current)
                else None
            )
        else:
            if not isinstance(current, list):
                return None
            current = next(
                (
                    item
                    for item in current
                    if isinstance(item, dict)
                    and str(evaluate("." + match["key"], item)) == match["value"]
                ),
                None,
            )
        if current is None:
            return None
    return current
