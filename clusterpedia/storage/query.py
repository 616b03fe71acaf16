"""What a list or search asks the storage for: plain values, built by ``clusterpedia.search``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime
from typing import Literal

from clusterpedia.storage.condition import Condition
from clusterpedia.storage.selection import FieldPath, FieldRequirement, Requirement

Column = Literal["cluster", "namespace", "name", "created_at", "resource_version"]
ORDERABLE_COLUMNS: tuple[Column, ...] = (
    "cluster",
    "namespace",
    "name",
    "created_at",
    "resource_version",
)


@dataclass(frozen=True, slots=True)
class TypeFilter:
    """One resource type (all three set), or a group/version of a collection (``None`` = any)."""

    group: str
    version: str | None = None
    resource: str | None = None


@dataclass(frozen=True, slots=True)
class OwnerFilter:
    """Objects whose controller ancestor ``seniority`` levels up (0 = parent) is the owner."""

    uid: str = ""
    name: str = ""
    group: str | None = None  # with resource: the owner's group-resource (by name only)
    resource: str | None = None
    seniority: int = 0


@dataclass(frozen=True, slots=True)
class OrderBy:
    key: Column | FieldPath
    descending: bool = False


@dataclass(frozen=True, slots=True)
class WhereSQL:
    """``whereSQLStatement`` as written and as parsed (parameters bound in ``condition``);
    served only with the server flag on."""

    statement: str
    condition: Condition


@dataclass(frozen=True)
class Query:
    """A list request against the ``resources`` table. Empty tuples mean "no restriction"."""

    types: tuple[TypeFilter, ...] = ()
    clusters: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    fuzzy_names: tuple[str, ...] = ()
    since: datetime | None = None
    before: datetime | None = None
    owner: OwnerFilter | None = None
    labels: tuple[Requirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()
    order_by: tuple[OrderBy, ...] = ()
    where_sql: WhereSQL | None = None
    limit: int | None = None
    continue_token: str | None = None
    offset: int | None = None
    with_remaining_count: bool = False
    metadata_only: bool = False
    # Embed each object's Events (the original's injectEvents): the API server's part, after
    # the rows are read; the storage reads the rows the same way either way.
    inject_events: bool = False

    def fingerprint(self) -> str:
        """Identifies the result set (everything but paging), so a continue token cannot be
        replayed against a different query."""
        paging = {"limit", "continue_token", "offset", "with_remaining_count"}
        material = repr(
            [
                (f.name, getattr(self, f.name))
                for f in dataclass_fields(self)
                if f.name not in paging
            ]
        )
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    @property
    def single_type(self) -> bool:
        return len(self.types) == 1 and self.types[0].resource is not None


@dataclass(frozen=True, slots=True)
class Item:
    """One stored object: its type and its JSON (or only ``metadata``), as stored."""

    group: str
    version: str
    resource: str
    kind: str
    cluster: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]
    continue_token: str | None
    remaining_count: int | None
    resource_version: int = 0  # the global head when the list's first page was read
