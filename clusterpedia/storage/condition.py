"""The syntax tree of a ``whereSQLStatement``: a condition over one row of ``resources``.

The search layer parses user text into these values (``clusterpedia.search.wheresql``); the
compiler turns them into SQLAlchemy expressions. What cannot be written here cannot reach the
database: no subquery, no other table, no function outside :data:`FUNCTIONS`, and every value
is bound as a parameter. Operands carry a kind (text, time or integer) checked at parse time,
so the database never sees a comparison it would refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from operator import eq, ge, gt, le, lt, ne
from typing import Any, Literal

from clusterpedia.storage.selection import FieldPath

Kind = Literal["text", "time", "int"]

# The columns a condition may name, with their kinds: the original's column names.
COLUMNS: dict[str, Kind] = {
    "group": "text",
    "version": "text",
    "resource": "text",
    "kind": "text",
    "cluster": "text",
    "namespace": "text",
    "name": "text",
    "uid": "text",
    "owner_uid": "text",
    "resource_version": "text",
    "created_at": "time",
    "synced_at": "time",
    "deleted_at": "time",
}
# name -> (kind of every argument, kind of the result); coalesce takes two or more.
FUNCTIONS: dict[str, tuple[Kind | None, Kind | None]] = {
    "lower": ("text", "text"),
    "upper": ("text", "text"),
    "length": ("text", "int"),
    "coalesce": (None, None),  # any kind, all the same; the result has that kind
}
Comparator = Literal["=", "!=", "<", "<=", ">", ">="]
# Each comparator as a function: the same for Python values and SQLAlchemy expressions.
COMPARE: dict[Comparator, Callable[[Any, Any], Any]] = {
    "=": eq,
    "!=": ne,
    "<": lt,
    "<=": le,
    ">": gt,
    ">=": ge,
}


@dataclass(frozen=True, slots=True)
class Column:
    name: str

    @property
    def kind(self) -> Kind:
        return COLUMNS[self.name]


@dataclass(frozen=True, slots=True)
class JsonField:
    """The scalar at ``path`` in the object's JSON, as text (NULL when missing)."""

    path: FieldPath
    kind: Kind = "text"


@dataclass(frozen=True, slots=True)
class Value:
    """A literal or a ``?`` parameter, already converted to its operand's kind."""

    value: str | int | datetime
    kind: Kind


@dataclass(frozen=True, slots=True)
class Call:
    function: str
    args: tuple[Operand, ...]
    kind: Kind


Operand = Column | JsonField | Value | Call


@dataclass(frozen=True, slots=True)
class Comparison:
    left: Operand
    operator: Comparator
    right: Operand


@dataclass(frozen=True, slots=True)
class InList:
    operand: Operand
    values: tuple[Operand, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Between:
    operand: Operand
    low: Operand
    high: Operand
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Like:
    """``%`` matches any run of characters, ``_`` one, ``\\`` escapes; case-sensitive."""

    operand: Operand
    pattern: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class IsNull:
    operand: Operand
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Constant:
    value: bool


@dataclass(frozen=True, slots=True)
class Junction:
    operator: Literal["and", "or"]
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Negation:
    part: Condition


Condition = Comparison | InList | Between | Like | IsNull | Constant | Junction | Negation
