"""What a selector selects: label and field requirements, and the paths into an object.

The search layer parses user text into these values (``clusterpedia.search.selectors``); the
storage compiles them into SQL and the watch feed matches them against events. They live here,
below both, so the storage never imports the search language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Operator = Literal["exists", "!exists", "in", "notin", "gt", "lt"]

# A Kubernetes name segment: also the keys a field path prints without brackets.
NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


@dataclass(frozen=True, slots=True)
class Key:
    """One object key in a field path."""

    name: str


@dataclass(frozen=True, slots=True)
class Index:
    """One list element (``[2]``), or every element (``[]``, index None)."""

    index: int | None


Segment = Key | Index


@dataclass(frozen=True, slots=True)
class FieldPath:
    segments: tuple[Segment, ...]

    @property
    def has_wildcard(self) -> bool:
        return any(isinstance(s, Index) and s.index is None for s in self.segments)

    def __str__(self) -> str:
        out = []
        for segment in self.segments:
            if isinstance(segment, Key):
                # A dot inside a key would read back as two keys: such keys get brackets.
                bare = NAME.match(segment.name) and "." not in segment.name
                out.append(f".{segment.name}" if bare else f"['{segment.name}']")
            else:
                out.append(f"[{'' if segment.index is None else segment.index}]")
        return "".join(out).lstrip(".")


@dataclass(frozen=True, slots=True)
class Requirement:
    """``key op values``; ``=``/``==`` are ``in`` with one value, ``!=`` is ``notin``."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    path: FieldPath
    operator: Operator
    values: tuple[str, ...] = ()

    @property
    def matches_missing(self) -> bool:
        """Whether an object without a value at a plain (wildcard-free) path matches ``in`` or
        ``notin``: Kubernetes compares a missing field as ``""``, so ``spec.nodeName=`` finds
        unscheduled Pods and ``spec.nodeName!=`` only scheduled ones."""
        if self.operator == "in":
            return MISSING_FIELD in self.values
        if self.operator == "notin":
            return MISSING_FIELD not in self.values
        return False


# What Kubernetes' field selectors see for a field an object does not have.
MISSING_FIELD = ""
