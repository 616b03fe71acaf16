"""kubectl's JSONPath (k8s.io/client-go/util/jsonpath), as a CRD's printer columns use it.

kube-apiserver renders a custom resource's Table by parsing ``{<jsonPath>}`` with missing keys
allowed and taking the first value found; this module does the same, so our columns match
the member's for every path it accepts: fields (``.a.b``, ``['a']``, backslash escapes),
``$``, indices and slices (``[0]``, ``[-1]``, ``[1:3]``, ``[::2]``), wildcards (``[*]``, ``.*``),
recursive descent (``..name``), unions (``[0,2]``, ``['a','b']``) and filters
(``[?(@.type=="Ready")]``, ``==``, ``!=``, ``<``, ``>``, ``<=``, ``>=``, and existence
``[?(@.x)]``). Its quirks too: ``['a.b']`` means ``.a.b``, and ``[*]`` is the slice ``[:]``
(so not of a map).
``range``/``end`` templates and literal text are not column paths and raise
:class:`JSONPathError`, as do malformed paths.

Where client-go fails an evaluation (an index out of bounds, comparing a string with a
number), :func:`find` raises :class:`NoValue`; the column's cell is then empty, as on the member.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson


class JSONPathError(ValueError):
    """The path does not parse (kube-apiserver falls back to its default columns)."""


class NoValue(Exception):
    """The evaluation failed as client-go's would: the cell is empty."""


# -- syntax tree --------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Wildcard:
    pass


@dataclass(frozen=True)
class Recursive:
    pass


@dataclass(frozen=True)
class Slice:
    start: int | None
    stop: int | None
    step: int | None
    single: bool  # ``[n]``: one element


@dataclass(frozen=True)
class Union:
    branches: tuple[tuple[Step, ...], ...]


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Filter:
    left: tuple[Step, ...] | Literal
    operator: str  # one of _OPERATORS, or "exists"
    right: tuple[Step, ...] | Literal | None


Step = Field | Wildcard | Recursive | Slice | Union | Filter

# client-go's parser (k8s.io/client-go/util/jsonpath/parser.go), whose quirks are the contract:
# a field ends only at these characters (quotes and parentheses belong to the name), a
# bracket ends at its first "]", ``['a.b']`` is the path ``.a.b``, and ``[*]`` is ``[:]``.
_TERMINATORS = set(" \t\r\n.,[]$@{}")
_DICT_KEY = re.compile(r"^'([^']*)'$")
_SLICE = re.compile(r"^(-?\d*)(:-?\d*)?(:-?\d*)?$")
_NUMBER = re.compile(r"^[-+]?\d+(\.\d+)?([eE][-+]?\d+)?$")
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}
_FILTER = re.compile(r"^([^!<>=]+)([!<>=]+)(.+?)$", re.DOTALL)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.steps: list[Step] = []

    def peek(self, ahead: int = 0) -> str:
        at = self.pos + ahead
        return self.text[at] if at < len(self.text) else ""

    def fail(self, message: str) -> JSONPathError:
        return JSONPathError(f"invalid JSONPath {self.text!r}: {message}")

    def parse(self) -> tuple[Step, ...]:
        while self.pos < len(self.text):
            rest = self.text[self.pos :]
            char = rest[0]
            if rest.startswith("[?("):
                self.steps.append(self.filter())
            elif rest.startswith(".."):
                if self.steps and isinstance(self.steps[-1], Recursive):
                    raise self.fail("invalid multiple recursive descent")
                self.pos += 2
                self.steps.append(Recursive())
                if _alphanumeric(self.peek()):
                    self.steps.append(self.field())
            elif char in " @$":
                self.pos += 1
            elif char == "[":
                self.steps.extend(self.array())
            elif char == ".":
                self.pos += 1
                self.steps.append(self.field())
            else:  # literals, identifiers (range, end): template syntax, not a column's path
                raise self.fail(f"unsupported character {char!r}")
        return tuple(self.steps)

    def field(self) -> Field | Wildcard:
        name: list[str] = []
        while (char := self.peek()) and char not in _TERMINATORS:
            if char == "\\":  # escapes the next character; the backslash is dropped
                name.append(self.peek(1))
                self.pos += 2
                continue
            name.append(char)
            self.pos += 1
        text = "".join(name)
        return Wildcard() if text == "*" else Field(text)

    def array(self) -> tuple[Step, ...]:
        end = self.text.find("]", self.pos)
        if end < 0:
            raise self.fail("unterminated array")
        inside = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return _array(inside, self.text)

    def filter(self) -> Filter:
        start = at = self.pos + 3
        opened = closed = False
        pair = ""
        while True:
            if at >= len(self.text) or self.text[at] == "\n":
                raise self.fail("unterminated filter")
            char = self.text[at]
            if char in "'\"":
                if not opened:
                    opened, pair = True, char
                elif self.text[at - 1] != "\\" and char == pair:
                    closed = True
            elif char == ")" and opened == closed:
                break
            at += 1
        if self.peek(at + 1 - self.pos) != "]":
            raise self.fail("unclosed array: expected ]")
        expression = self.text[start:at]
        self.pos = at + 2
        match = _FILTER.match(expression)
        if match is None:
            return Filter(_operand(expression, self.text), "exists", None)
        operator = match[2]
        if operator not in _OPERATORS:
            raise self.fail(f"unrecognized filter operator {operator!r}")
        return Filter(_operand(match[1], self.text), operator, _operand(match[3], self.text))


def _alphanumeric(char: str) -> bool:
    return bool(char) and (char == "_" or char.isalnum())


def _array(inside: str, whole: str) -> tuple[Step, ...]:
    """The steps of one bracket's content (a dict key may be several: ``['a.b']``)."""
    if inside == "*":
        inside = ":"
    parts = inside.split(",")
    if len(parts) > 1:
        return (Union(tuple(_array(part.strip(" "), whole) for part in parts)),)
    key = _DICT_KEY.match(inside)
    if key is not None:  # ['a.b'] is parsed as the path .a.b
        return _Parser("." + key[1]).parse()
    match = _SLICE.match(inside)
    if match is None:
        raise JSONPathError(f"invalid JSONPath {whole!r}: invalid array index {inside!r}")
    start = int(match[1]) if match[1] not in ("", "-") else None
    stop = int(match[2][1:]) if match[2] and match[2][1:] not in ("", "-") else None
    step = int(match[3][1:]) if match[3] and match[3][1:] not in ("", "-") else None
    return (Slice(start, stop, step, single=match[2] is None),)


def _operand(text: str, whole: str) -> tuple[Step, ...] | Literal:
    text = text.strip(" ")
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return Literal(text[1:-1])
    if text in ("true", "false"):
        return Literal(text == "true")
    if _NUMBER.match(text):
        return Literal(float(text) if any(c in text for c in ".eE") else int(text))
    if text[:1] in ("@", "$", "."):
        return _Parser(text).parse()
    raise JSONPathError(f"invalid JSONPath {whole!r}: invalid filter operand {text!r}")


def parse(path: str) -> tuple[Step, ...]:
    """A printer column's ``jsonPath``, as kube-apiserver parses ``{<jsonPath>}``."""
    if not path.strip():
        raise JSONPathError("an empty JSONPath")
    if "{" in path or "}" in path:
        raise JSONPathError(f"invalid JSONPath {path!r}: templates are not column paths")
    return _Parser(path).parse()


# -- evaluation ---------------------------------------------------------------------------


def find(steps: tuple[Step, ...], document: Any) -> list[Any]:
    """Every value ``steps`` reach in ``document``, in client-go's order."""
    values = [document]
    for step in steps:
        values = list(_apply(step, values))
    return values


def _apply(step: Step, values: list[Any]) -> Iterator[Any]:
    if isinstance(step, Field):
        for value in values:
            if isinstance(value, dict) and step.name in value:
                yield value[step.name]
    elif isinstance(step, Wildcard):
        for value in values:
            if isinstance(value, dict):
                yield from (value[key] for key in sorted(value))
            elif isinstance(value, list):
                yield from value
    elif isinstance(step, Recursive):
        for value in values:
            yield from _descend(value)
    elif isinstance(step, Slice):
        for value in values:
            yield from _slice(step, value)
    elif isinstance(step, Union):
        for branch in step.branches:
            yield from _each(branch, values)
    else:
        for value in values:
            if not isinstance(value, list):
                raise NoValue("a filter over something that is not a list")
            yield from (item for item in value if _passes(step, item))


def _each(branch: tuple[Step, ...], values: list[Any]) -> Iterator[Any]:
    for value in values:
        yield from find(branch, value)


def _descend(value: Any) -> Iterator[Any]:
    """The value and every container below it (client-go's recursive descent)."""
    children = (
        [value[key] for key in sorted(value)]
        if isinstance(value, dict)
        else list(value)
        if isinstance(value, list)
        else []
    )
    if children:
        yield value
        for child in children:
            yield from _descend(child)


def _slice(step: Slice, value: Any) -> Iterator[Any]:
    if not isinstance(value, list):
        raise NoValue("an index into something that is not a list")
    length = len(value)
    start = step.start or 0
    if start < 0:
        start += length
    if step.single:
        stop = start + 1
    else:
        stop = length if step.stop is None else step.stop
        if stop < 0:
            stop += length
    # Asking for no elements is allowed anywhere, as in client-go.
    if stop != start and (not 0 <= start < length or not 0 <= stop <= length or start > stop):
        raise NoValue(f"array index out of bounds: {start}:{stop} of {length}")
    if stop == start:
        return
    if step.step is not None and step.step <= 0:
        raise NoValue("step must be > 0")
    yield from value[start : stop : step.step or 1]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    raise NoValue(f"cannot compare {type(value).__name__} values")


def _operand_value(operand: tuple[Step, ...] | Literal | None, item: Any) -> list[Any]:
    if isinstance(operand, Literal):
        return [operand.value]
    assert operand is not None
    return find(operand, item)


def _passes(step: Filter, item: Any) -> bool:
    lefts = _operand_value(step.left, item)
    if step.operator == "exists":
        return bool(lefts)
    if not lefts:
        return False
    if len(lefts) > 1:
        raise NoValue("a filter can only compare one element at a time")
    rights = _operand_value(step.right, item)
    if not rights:
        return False
    if len(rights) > 1:
        raise NoValue("a filter can only compare one element at a time")
    left, right = lefts[0], rights[0]
    if _kind(left) != _kind(right):
        raise NoValue("incompatible types for comparison")
    if step.operator not in ("==", "!=") and _kind(left) == "bool":
        raise NoValue("invalid type for comparison")
    return _OPERATORS[step.operator](left, right)


# -- printing -----------------------------------------------------------------------------


def go_text(value: Any) -> str | None:
    """A value as client-go's ``PrintResults`` writes it: objects and lists as JSON (keys
    sorted, as Go's encoder does), scalars as Go's ``fmt.Print``; None for JSON null."""
    if value is None:
        return None
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    return str(value)


def go_float(value: float) -> str:
    """Go's ``%v`` of a float64 (``strconv`` 'g', shortest): the shortest round-trip digits,
    in exponent form when the exponent is below -4 or at least 6 (``1e+06``, ``1.5e-05``)."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    exact = Decimal(repr(abs(value)))  # repr is the shortest round-trip form, as Go's
    digits = "".join(map(str, exact.as_tuple().digits)).rstrip("0") or "0"
    exponent = exact.adjusted()
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if exponent < 0:
        return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
    integer, fraction = digits[: exponent + 1].ljust(exponent + 1, "0"), digits[exponent + 1 :]
    return sign + integer + ("." + fraction if fraction else "")
