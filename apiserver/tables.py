"""Server-side ``meta.k8s.io/v1`` Tables, with ``CLUSTER`` as the first column.

The only place the API server parses stored objects: a human asked for columns, so each row's
object is read once. Age cells are computed at response time, never cached.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from clusterpedia.storage import CLUSTER_ANNOTATION, PrinterColumn, SyncedType

from . import jsonpath
from .printers import (
    AGE,
    NAME,
    Column,
    Obj,
    human_duration,
    name_age,
    parse_time,
)
from .printers import PRINTERS as WORKLOAD_PRINTERS
from .printers_platform import PLATFORM_PRINTERS
from .status import StatusError

logger = logging.getLogger(__name__)

CLUSTER = Column("Cluster", description="The cluster the object was synced from.")
PRINTERS = {**WORKLOAD_PRINTERS, **PLATFORM_PRINTERS}
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
        member = _member_columns(synced)
        if printer is not None:
            ours = [*([NAME] if printer.name_first else []), *printer.columns]
            if [c.name for c in member] == [c.name for c in ours]:
                ours = [_column(c) for c in member]  # the member's words for the same columns
            self.columns = [CLUSTER, *ours]
            self._row = printer.row
            self._name_first = printer.name_first
        elif [(c.name, c.type) for c in member] == DEFAULT_COLUMNS:
            # kube-apiserver's table for a kind without a printer: Name and Created At
            self.columns = [CLUSTER, *(_column(c) for c in member)]
            self._row = _name_created
            self._name_first = True
        elif synced is not None and not member and (paths := _parsed_columns(synced)):
            self.custom = synced.printer_columns
            self._paths = paths
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
            self._row = name_age
            self._name_first = True

    def _custom_row(self, obj: Obj) -> list[Any]:
        cells: list[Any] = [(obj.get("metadata") or {}).get("name")]
        for column, path in zip(self.custom, self._paths, strict=True):
            try:
                found = jsonpath.find(path, obj)
            except jsonpath.NoValue:
                found = []
            cells.append(_cell(column.type, found[0]) if found else None)
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


DEFAULT_COLUMNS = [("Name", "string"), ("Created At", "date")]


def _member_columns(synced: SyncedType | None) -> tuple[PrinterColumn, ...]:
    """A built-in type's columns as the member defines them (no jsonPath), if recorded."""
    if synced is None or not synced.printer_columns:
        return ()
    if any(c.json_path for c in synced.printer_columns):
        return ()  # a CRD's additionalPrinterColumns
    return synced.printer_columns


def _column(column: PrinterColumn) -> Column:
    return Column(column.name, column.type, column.format, column.priority, column.description)


def _name_created(obj: Obj) -> list[Any]:
    metadata = obj.get("metadata") or {}
    return [metadata.get("name"), metadata.get("creationTimestamp")]


def cluster_of(obj: Obj) -> str:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get(CLUSTER_ANNOTATION, ""))


def _column_type(kind: str) -> str:
    return kind if kind in ("integer", "number", "boolean", "date", "string") else "string"


def _parsed_columns(synced: SyncedType) -> list[tuple[jsonpath.Step, ...]]:
    """Each printer column's parsed path; none when one does not parse, so the type gets the
    default columns, as kube-apiserver gives it."""
    try:
        return [jsonpath.parse(column.json_path) for column in synced.printer_columns]
    except jsonpath.JSONPathError as error:
        logger.warning("%s: printer columns ignored: %s", synced.rtype, error)
        return []


def _cell(kind: str, value: Any) -> Any:
    """A column's cell as kube-apiserver's CRD table convertor makes it from the first value
    its path found (``cellForJSONValue``; strings printed as client-go prints them)."""
    if value is None:
        return None
    if kind == "string" or kind not in ("integer", "number", "boolean", "date"):
        return jsonpath.go_text(value)
    if kind == "integer":
        return (
            int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )
    if kind == "number":
        return (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if not isinstance(value, str):
        return None
    when = parse_time(value)
    return human_duration((datetime.now(UTC) - when).total_seconds()) if when else "<invalid>"
