"""Parse ``whereSQLStatement`` into a :mod:`clusterpedia.storage.condition` tree.

The original pastes the statement into its SQL (``WHERE ... AND (<statement>)``), so
``1=1) OR (1=1`` leaves its parentheses and a subquery reads any table. Here the statement is
parsed by a grammar that knows only what is safe, so anything else is a parse error (400)::

    condition  := disjunct (OR disjunct)*
    disjunct   := conjunct (AND conjunct)*
    conjunct   := NOT conjunct | predicate
    predicate  := operand [ ("=" | "!=" | "<>" | "<" | "<=" | ">" | ">=") operand
                          | [NOT] IN "(" operand ("," operand)* ")"
                          | [NOT] BETWEEN operand AND operand
                          | [NOT] LIKE pattern
                          | IS [NOT] NULL ]
                 | "(" condition ")" | TRUE | FALSE
    operand    := column | object JSON | function "(" operand, ... ")" | "?" | 'text' | number
    object JSON:= object->'key'->>'key' | object->>'$.a.b[0]'
                 | JSON_EXTRACT(object, '$.a.b') | JSON_UNQUOTE(JSON_EXTRACT(...))

Columns are those of :data:`COLUMNS` (quoted ``"group"`` or ```group``` or bare); functions
those of :data:`FUNCTIONS`. Operands have kinds: text columns and JSON values compare as text
(a number compares as its decimal text), time columns with times (``'2024-01-02'``, RFC 3339),
``length()`` with integers. A comparison the database would refuse is refused here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clusterpedia.search.selectors import parse_field_path
from clusterpedia.search.times import parse_search_time
from clusterpedia.storage.condition import (
    COLUMNS,
    COMPARE,
    FUNCTIONS,
    Between,
    Call,
    Column,
    Comparator,
    Comparison,
    Condition,
    Constant,
    InList,
    IsNull,
    JsonField,
    Junction,
    Kind,
    Like,
    Negation,
    Operand,
    Value,
)
from clusterpedia.storage.errors import InvalidQuery
from clusterpedia.storage.selection import FieldPath, Index, Key

MAX_STATEMENT_LENGTH = 4096
MAX_NODES = 500  # operands and conditions in one statement
MAX_DEPTH = 32  # nested parentheses and NOTs
MAX_VALUES = 500  # values in one IN list

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<quoted>"[^"]*"|`[^`]*`)
  | (?P<number>[0-9]+(?:\.[0-9]+)?(?![A-Za-z_0-9]))
  | (?P<word>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<symbol>->>|->|<=|>=|<>|!=|[=<>(),?.-])
    """,
    re.VERBOSE | re.ASCII,
)
_COMPARATORS: dict[str, Comparator] = {
    "=": "=",
    "!=": "!=",
    "<>": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}
_JSON_FUNCTIONS = ("json_extract", "json_unquote")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # string, quoted, number, word, symbol, end
    text: str
    position: int


@dataclass(frozen=True, slots=True)
class _Raw:
    """A literal or parameter before it meets the operand that gives it a kind."""

    value: str | int | float | bool | None
    text: str  # as written, for messages


def _tokens(statement: str) -> list[_Token]:
    out: list[_Token] = []
    position = 0
    while position < len(statement):
        match = _TOKEN.match(statement, position)
        if match is None:
            raise InvalidQuery(
                f"whereSQLStatement: unexpected {statement[position]!r} at position {position}"
            )
        kind = match.lastgroup or ""
        if kind != "space":
            out.append(_Token(kind, match.group(0), position))
        position = match.end()
    out.append(_Token("end", "", position))
    return out


def parse_where_sql(statement: str, params: Sequence[Any]) -> Condition:
    """The condition ``statement`` describes, with ``?`` bound to ``params`` in order;
    :class:`InvalidQuery` for anything outside the grammar above."""
    if len(statement) > MAX_STATEMENT_LENGTH:
        raise InvalidQuery(f"whereSQLStatement is longer than {MAX_STATEMENT_LENGTH} characters")
    if not statement.strip():
        raise InvalidQuery("whereSQLStatement is empty")
    parser = _Parser(_tokens(statement), list(params))
    condition = parser.condition()
    parser.expect_end()
    return condition


class _Parser:
    def __init__(self, tokens: list[_Token], params: list[Any]):
        self.tokens = tokens
        self.index = 0
        self.params = params
        self.used = 0
        self.nodes = 0
        self.depth = 0

    # -- tokens -------------------------------------------------------------------------------

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def error(self, message: str, token: _Token | None = None) -> InvalidQuery:
        token = token or self.current
        where = "at the end" if token.kind == "end" else f"at position {token.position}"
        return InvalidQuery(f"whereSQLStatement: {message} {where}")

    def keyword(self, *words: str) -> bool:
        """Consume the keywords ``words`` if they come next."""
        ahead = self.tokens[self.index : self.index + len(words)]
        if len(ahead) == len(words) and all(
            t.kind == "word" and t.text.lower() == w for t, w in zip(ahead, words, strict=True)
        ):
            self.index += len(words)
            return True
        return False

    def symbol(self, text: str) -> bool:
        if self.current.kind == "symbol" and self.current.text == text:
            self.index += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.symbol(text):
            raise self.error(f"expected {text!r}")

    def expect_end(self) -> None:
        if self.current.kind != "end":
            raise self.error(f"unexpected {self.current.text!r}")
        if self.used != len(self.params):
            raise InvalidQuery(
                f"whereSQLStatement has {self.used} '?' but {len(self.params)} parameters"
            )

    def count(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.error(f"more than {MAX_NODES} terms")

    # -- conditions ---------------------------------------------------------------------------

    def condition(self) -> Condition:
        parts = [self.disjunct()]
        while self.keyword("or"):
            parts.append(self.disjunct())
        return parts[0] if len(parts) == 1 else Junction("or", tuple(parts))

    def disjunct(self) -> Condition:
        parts = [self.conjunct()]
        while self.keyword("and"):
            parts.append(self.conjunct())
        return parts[0] if len(parts) == 1 else Junction("and", tuple(parts))

    def conjunct(self) -> Condition:
        self.count()
        if self.keyword("not"):
            with self.nested():
                return Negation(self.conjunct())
        return self.predicate()

    def nested(self) -> _Depth:
        return _Depth(self)

    def predicate(self) -> Condition:
        if self.keyword("true"):
            return Constant(True)
        if self.keyword("false"):
            return Constant(False)
        if self.current.kind == "symbol" and self.current.text == "(" and self._group_ahead():
            self.index += 1
            with self.nested():
                inner = self.condition()
            self.expect(")")
            return inner
        start = self.current
        left = self.operand()
        if self.current.kind == "symbol" and self.current.text in _COMPARATORS:
            operator = _COMPARATORS[self.current.text]
            self.index += 1
            right = self.operand()
            return self.comparison(left, operator, right, start)
        if self.keyword("is", "not", "null"):
            return IsNull(self.typed(left, start), negated=True)
        if self.keyword("is", "null"):
            return IsNull(self.typed(left, start))
        negated = self.keyword("not")
        if self.keyword("in"):
            return self.in_list(left, negated, start)
        if self.keyword("between"):
            low = self.operand()
            if not self.keyword("and"):
                raise self.error("expected AND in BETWEEN")
            high = self.operand()
            operand = self.typed(left, start)
            kind = operand.kind
            return Between(
                operand, self.of_kind(low, kind), self.of_kind(high, kind), negated=negated
            )
        if self.keyword("like"):
            return self.like(left, negated, start)
        if negated:
            raise self.error("expected IN, BETWEEN or LIKE after NOT")
        raise self.error("expected a comparison", start if isinstance(left, _Raw) else None)

    def _group_ahead(self) -> bool:
        """Whether the ``(`` here opens a condition rather than an operand like ``(name)``:
        conditions have a comparison or keyword before the matching ``)``."""
        level = 0
        for token in self.tokens[self.index :]:
            if token.kind == "symbol" and token.text == "(":
                level += 1
            elif token.kind == "symbol" and token.text == ")":
                level -= 1
                if level == 0:
                    return False
            elif level >= 1 and (
                (token.kind == "symbol" and token.text in _COMPARATORS)
                or (
                    token.kind == "word"
                    and token.text.lower()
                    in ("and", "or", "not", "in", "between", "like", "is", "true", "false")
                )
            ):
                return True
        return False

    def comparison(
        self, left: Operand | _Raw, operator: Comparator, right: Operand | _Raw, start: _Token
    ) -> Condition:
        if isinstance(left, _Raw) and isinstance(right, _Raw):
            return self.constant(left, operator, right, start)
        if isinstance(left, _Raw):  # '3' < length(name): keep the operand on the left
            flipped: dict[Comparator, Comparator] = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
            left, right, operator = right, left, flipped.get(operator, operator)
        assert not isinstance(left, _Raw)
        return Comparison(left, operator, self.of_kind(right, left.kind))

    def constant(self, left: _Raw, operator: Comparator, right: _Raw, start: _Token) -> Constant:
        """``1=1``, ``'a' <> 'b'``: values alone, decided here (they read no row)."""
        a, b = left.value, right.value
        numbers = (int, float)
        same = (isinstance(a, str) and isinstance(b, str)) or (
            isinstance(a, numbers)
            and isinstance(b, numbers)
            and not isinstance(a, bool)
            and not isinstance(b, bool)
        )
        if not same or a is None or b is None:
            raise self.error("a comparison of two values of different kinds", start)
        return Constant(bool(COMPARE[operator](a, b)))

    def in_list(self, left: Operand | _Raw, negated: bool, start: _Token) -> Condition:
        operand = self.typed(left, start)
        self.expect("(")
        values = [self.of_kind(self.operand(), operand.kind)]
        while self.symbol(","):
            if len(values) >= MAX_VALUES:
                raise self.error(f"more than {MAX_VALUES} values in IN")
            values.append(self.of_kind(self.operand(), operand.kind))
        self.expect(")")
        return InList(operand, tuple(values), negated=negated)

    def like(self, left: Operand | _Raw, negated: bool, start: _Token) -> Condition:
        operand = self.typed(left, start)
        if operand.kind != "text":
            raise self.error("LIKE needs text", start)
        pattern_token = self.current
        pattern = self.operand()
        if not isinstance(pattern, _Raw) or not isinstance(pattern.value, str):
            raise self.error("LIKE needs a text pattern ('...' or ?)", pattern_token)
        return Like(operand, pattern.value, negated=negated)

    # -- operands -----------------------------------------------------------------------------

    def typed(self, operand: Operand | _Raw, start: _Token) -> Operand:
        if isinstance(operand, _Raw):
            raise self.error("expected a column, JSON field or function", start)
        return operand

    def of_kind(self, operand: Operand | _Raw, kind: Kind) -> Operand:
        """``operand``, with a literal or parameter converted to ``kind``."""
        if not isinstance(operand, _Raw):
            if operand.kind != kind:
                raise self.error(f"cannot compare {kind} with {operand.kind}")
            return operand
        value = operand.value
        if value is None:
            raise self.error("NULL never compares equal; use IS NULL or IS NOT NULL")
        if isinstance(value, bool):
            if kind != "text":
                raise self.error(f"cannot compare {kind} with a boolean")
            return Value("true" if value else "false", "text")
        if kind == "text":
            return Value(value if isinstance(value, str) else _number_text(value), "text")
        if kind == "int":
            if isinstance(value, int) and -(2**63) <= value < 2**63:
                return Value(value, "int")
            raise self.error(f"expected an integer, not {operand.text}")
        if not isinstance(value, str):
            raise self.error(f"expected a time such as '2024-01-02T15:04:05Z', not {operand.text}")
        try:
            return Value(parse_search_time(value, what="time"), "time")
        except InvalidQuery as error:
            raise InvalidQuery(f"whereSQLStatement: {error.message}") from None

    def operand(self) -> Operand | _Raw:
        self.count()
        token = self.current
        if token.kind == "symbol" and token.text == "?":
            self.index += 1
            if self.used >= len(self.params):
                raise self.error("more '?' than parameters", token)
            value = self.params[self.used]
            self.used += 1
            if isinstance(value, str) and "\x00" in value:
                raise self.error("a parameter holds a NUL character", token)
            return _Raw(value, f"parameter {self.used}")
        if token.kind == "string":
            self.index += 1
            text = token.text[1:-1].replace("''", "'")
            if "\x00" in text:
                raise self.error("a NUL character", token)
            return _Raw(text, token.text)
        if token.kind == "number" or (
            token.kind == "symbol"
            and token.text == "-"
            and self.tokens[self.index + 1].kind == "number"
        ):
            sign = -1 if token.text == "-" else 1
            if sign < 0:
                self.index += 1
            number = self.current.text
            self.index += 1
            return _Raw(sign * (float(number) if "." in number else int(number)), number)
        if token.kind == "word" and token.text.lower() == "null":
            self.index += 1
            return _Raw(None, "NULL")
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            self.index += 1
            return _Raw(token.text.lower() == "true", token.text)
        if token.kind == "symbol" and token.text == "(":
            self.index += 1
            with self.nested():
                inner = self.operand()
            self.expect(")")
            return inner
        if token.kind == "quoted":
            self.index += 1
            return self.column(token.text[1:-1], token)
        if token.kind == "word":
            self.index += 1
            if self.symbol("("):
                return self.call(token.text.lower(), token)
            return self.column(token.text, token)
        raise self.error(f"unexpected {token.text!r}" if token.text else "expected an operand")

    def column(self, name: str, token: _Token) -> Operand:
        if self.symbol("."):  # resources.name
            if name != "resources":
                raise self.error(f"unknown table {name!r}: only resources", token)
            field = self.current
            if field.kind not in ("word", "quoted"):
                raise self.error("expected a column name")
            self.index += 1
            name = field.text if field.kind == "word" else field.text[1:-1]
        if name == "object":
            return self.json_arrows(token)
        if name not in COLUMNS:
            raise self.error(
                f"unknown column {name!r}: use one of {', '.join(COLUMNS)} or the object's JSON",
                token,
            )
        return Column(name)

    def json_arrows(self, token: _Token) -> JsonField:
        """``object->'a'->>'b'`` or ``object->>'$.a.b'``; the last step must be ``->>``."""
        segments: list[Key | Index] = []
        while self.current.kind == "symbol" and self.current.text in ("->", "->>"):
            arrow = self.current.text
            self.index += 1
            step = self.current
            if step.kind == "string" and step.text.startswith("'$"):
                segments += _json_path(step.text[1:-1], self, step).segments
            elif step.kind == "string":
                segments.append(Key(step.text[1:-1].replace("''", "'")))
            elif step.kind == "number" and "." not in step.text:
                segments.append(Index(int(step.text)))
            else:
                raise self.error("expected a key ('name') or an index after the arrow", step)
            self.index += 1
            if arrow == "->>":
                if self.current.kind == "symbol" and self.current.text in ("->", "->>"):
                    raise self.error("'->>' must be the last step")
                return self.json_field(segments, token)
        raise self.error("use object->'key'->>'key' (the last step '->>' gives text)", token)

    def json_field(self, segments: list[Key | Index], token: _Token) -> JsonField:
        if not segments or len(segments) > 32:
            raise self.error("a JSON path needs 1 to 32 steps", token)
        return JsonField(FieldPath(tuple(segments)))

    def call(self, function: str, token: _Token) -> Operand:
        if function in _JSON_FUNCTIONS:
            return self.json_call(function, token)
        if function not in FUNCTIONS:
            raise self.error(
                f"unknown function {function!r}: use one of "
                f"{', '.join([*FUNCTIONS, *_JSON_FUNCTIONS])}",
                token,
            )
        with self.nested():
            args = [self.operand()]
            while self.symbol(","):
                args.append(self.operand())
        self.expect(")")
        argument_kind, result_kind = FUNCTIONS[function]
        if function == "coalesce":
            if len(args) < 2:
                raise self.error("coalesce needs two or more arguments", token)
            first = next((a for a in args if not isinstance(a, _Raw)), None)
            if first is None:
                raise self.error("coalesce needs a column, JSON field or function", token)
            kind = first.kind
            return Call(function, tuple(self.of_kind(a, kind) for a in args), kind)
        if len(args) != 1:
            raise self.error(f"{function} takes one argument", token)
        assert argument_kind is not None and result_kind is not None
        return Call(
            function, (self.of_kind(self.typed(args[0], token), argument_kind),), result_kind
        )

    def json_call(self, function: str, token: _Token) -> JsonField:
        """``JSON_EXTRACT(object, '$.a.b')``, or it inside ``JSON_UNQUOTE(...)``."""
        if function == "json_unquote":
            inner = self.current
            if not (inner.kind == "word" and inner.text.lower() == "json_extract"):
                raise self.error("JSON_UNQUOTE takes JSON_EXTRACT(object, '$.path')", inner)
            self.index += 1
            self.expect("(")
            field = self.json_call("json_extract", inner)
            self.expect(")")
            return field
        target = self.current
        if not (target.kind in ("word", "quoted") and target.text.strip('"`') == "object"):
            raise self.error("JSON_EXTRACT reads the object column only", target)
        self.index += 1
        self.expect(",")
        path = self.current
        if path.kind != "string":
            raise self.error("JSON_EXTRACT needs a literal path such as '$.spec.replicas'", path)
        self.index += 1
        self.expect(")")
        return self.json_field(list(_json_path(path.text[1:-1], self, path).segments), token)


class _Depth:
    def __init__(self, parser: _Parser):
        self.parser = parser

    def __enter__(self) -> None:
        self.parser.depth += 1
        if self.parser.depth > MAX_DEPTH:
            raise self.parser.error(f"nested deeper than {MAX_DEPTH}")

    def __exit__(self, *_: object) -> None:
        self.parser.depth -= 1


def _json_path(text: str, parser: _Parser, token: _Token) -> FieldPath:
    """``$.spec.containers[0].image`` (keys and indexes, no wildcards)."""
    if not text.startswith("$"):
        raise parser.error("a JSON path starts with '$'", token)
    rest = text[1:]
    if not rest:
        raise parser.error("a JSON path needs at least one key", token)
    try:
        path = parse_field_path(rest)
    except InvalidQuery as error:
        raise parser.error(f"invalid JSON path {text!r} ({error.message})", token) from None
    if path.has_wildcard:
        raise parser.error("JSON paths may not use [*] or []; use a field selector", token)
    return path


def _number_text(value: int | float) -> str:
    return str(value)
