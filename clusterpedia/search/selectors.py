"""Label selectors (the apimachinery grammar) and Clusterpedia's enhanced field selectors.

Both parse into plain values; nothing here builds SQL. Every key and value is validated against
Kubernetes' own character rules, so what reaches the query compiler is already known-good (the
compiler still binds every value as a parameter).

Grammar (shared)::

    selector    := requirement ("," requirement)*
    requirement := "!" KEY | KEY | KEY ("=" | "==" | "!=") VALUE
                 | KEY ("in" | "notin") "(" VALUES ")"
                 | KEY (">" | "<") INTEGER                       (labels only)

Field keys are paths from the object root: ``status.phase``, ``metadata.annotations['a.io/b']``,
``metadata.labels."app"``, ``spec.containers[].image`` (any element) or ``[1]`` (one element).
Unlike the original, list segments are supported; the last segment may not be a list.
"""

from __future__ import annotations

import re
from typing import Any

from clusterpedia.storage.errors import InvalidQuery
from clusterpedia.storage.selection import (
    NAME,
    FieldPath,
    FieldRequirement,
    Index,
    Key,
    Requirement,
    Segment,
)

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_INTEGER = re.compile(r"^-?[0-9]{1,18}$")
_SPECIAL = set(",=!<>()")
# Kubernetes sets no bound; SQLite does (an expression tree at most 1,000 deep), and each
# requirement and value deepens the WHERE clause. Far above what a person writes.
MAX_REQUIREMENTS = 100
MAX_SET_VALUES = 100


def validate_qualified_name(key: str, *, what: str) -> str:
    """A Kubernetes qualified name: ``[prefix/]name``."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise InvalidQuery(f"invalid {what} {key!r}: prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not NAME.match(name):
        raise InvalidQuery(
            f"invalid {what} {key!r}: name part must be at most 63 characters of "
            "alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        )
    return key


def validate_label_value(value: str) -> str:
    if value and (len(value) > 63 or not NAME.match(value)):
        raise InvalidQuery(
            f"invalid label value {value!r}: must be empty or at most 63 characters of "
            "alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        )
    return value


class _Scanner:
    """A cursor over a selector string with the few reads both grammars need."""

    def __init__(self, text: str, *, what: str):
        self.text = text
        self.pos = 0
        self.what = what

    def error(self, message: str) -> InvalidQuery:
        return InvalidQuery(f"invalid {self.what} {self.text!r}: {message} at position {self.pos}")

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_spaces()
        return self.pos >= len(self.text)

    def peek(self, literal: str) -> bool:
        self.skip_spaces()
        return self.text.startswith(literal, self.pos)

    def take(self, literal: str) -> bool:
        if self.peek(literal):
            self.pos += len(literal)
            return True
        return False

    def word(self, *, escapes: bool) -> str:
        """Characters up to whitespace or a special character; ``\\x`` escapes if allowed."""
        self.skip_spaces()
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if escapes and char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if char.isspace() or char in _SPECIAL:
                break
            out.append(char)
            self.pos += 1
        return "".join(out)

    def operator_word(self) -> str | None:
        """``in`` or ``notin`` when followed by ``(``."""
        self.skip_spaces()
        for word in ("notin", "in"):
            rest = self.text[self.pos + len(word) :].lstrip()
            if self.text.startswith(word, self.pos) and rest.startswith("("):
                self.pos += len(word)
                return word
        return None


def _parse(text: str, *, what: str, read_key, read_value, allow_compare: bool):  # type: ignore[no-untyped-def]
    scanner = _Scanner(text, what=what)
    requirements: list[tuple[Any, str, tuple[str, ...]]] = []
    if scanner.at_end():
        return []
    while True:
        if scanner.take("!"):
            requirements.append((read_key(scanner), "!exists", ()))
        else:
            key = read_key(scanner)
            word = scanner.operator_word()
            if word is not None:
                scanner.take("(")
                values: list[str] = []
                while True:
                    if len(values) >= MAX_SET_VALUES:
                        raise scanner.error(f"more than {MAX_SET_VALUES} values in one set")
                    values.append(read_value(scanner))
                    if scanner.take(")"):
                        break
                    if not scanner.take(","):
                        raise scanner.error("expected ',' or ')'")
                requirements.append((key, word, tuple(values)))
            elif scanner.take("!="):
                requirements.append((key, "notin", (read_value(scanner),)))
            elif scanner.take("==") or scanner.take("="):
                requirements.append((key, "in", (read_value(scanner),)))
            elif allow_compare and (scanner.peek(">") or scanner.peek("<")):
                operator = "gt" if scanner.take(">") else ("lt" if scanner.take("<") else "")
                value = scanner.word(escapes=False)
                if not _INTEGER.match(value):
                    raise scanner.error(f"'{'>' if operator == 'gt' else '<'}' needs an integer")
                requirements.append((key, operator, (value,)))
            else:
                requirements.append((key, "exists", ()))
        if scanner.at_end():
            return requirements
        if not scanner.take(","):
            raise scanner.error("expected ','")
        if len(requirements) >= MAX_REQUIREMENTS:
            raise scanner.error(f"more than {MAX_REQUIREMENTS} requirements")


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse a Kubernetes label selector; raises :class:`InvalidQuery`."""

    def read_key(scanner: _Scanner) -> str:
        key = scanner.word(escapes=False)
        if not key:
            raise scanner.error("expected a label key")
        return validate_qualified_name(key, what="label key")

    def read_value(scanner: _Scanner) -> str:
        return validate_label_value(scanner.word(escapes=False))

    return [
        Requirement(key=key, operator=operator, values=values)
        for key, operator, values in _parse(
            text,
            what="label selector",
            read_key=read_key,
            read_value=read_value,
            allow_compare=True,
        )
    ]


def parse_field_path(text: str) -> FieldPath:
    """Parse a field path such as ``spec.containers[].image``; raises :class:`InvalidQuery`."""
    scanner = _Scanner(text, what="field path")
    path = _read_path(scanner)
    if not scanner.at_end():
        raise scanner.error("unexpected characters after the field path")
    return path


def _read_path(scanner: _Scanner) -> FieldPath:
    scanner.skip_spaces()
    text = scanner.text
    segments: list[Segment] = []
    expect_key = True
    if scanner.pos < len(text) and text[scanner.pos] == ".":
        scanner.pos += 1
    while scanner.pos < len(text):
        char = text[scanner.pos]
        if char == "[":
            close = text.find("]", scanner.pos)
            if close < 0:
                raise scanner.error("unclosed '['")
            inner = text[scanner.pos + 1 : close].strip()
            if inner[:1] in ("'", '"') and len(inner) >= 2 and inner[-1] == inner[0]:
                segments.append(Key(validate_qualified_name(inner[1:-1], what="field key")))
            elif inner == "":
                segments.append(Index(None))
            elif inner.isascii() and inner.isdigit() and len(inner) <= 6:
                segments.append(Index(int(inner)))
            else:
                raise scanner.error(f"invalid index [{inner}]")
            scanner.pos = close + 1
            expect_key = False
        elif char == "." and not expect_key:
            scanner.pos += 1
            expect_key = True
        elif char in ("'", '"') and expect_key:
            close = text.find(char, scanner.pos + 1)
            if close < 0:
                raise scanner.error("unclosed quote")
            segments.append(
                Key(validate_qualified_name(text[scanner.pos + 1 : close], what="field key"))
            )
            scanner.pos = close + 1
            expect_key = False
        elif expect_key:
            start = scanner.pos
            while scanner.pos < len(text) and (
                text[scanner.pos].isalnum() or text[scanner.pos] in "-_"
            ):
                scanner.pos += 1
            if scanner.pos == start:
                break
            segments.append(
                Key(validate_qualified_name(text[start : scanner.pos], what="field key"))
            )
            expect_key = False
        else:
            break
    if expect_key and segments:
        raise scanner.error("a field path may not end with '.'")
    if not segments:
        raise scanner.error("expected a field path")
    if isinstance(segments[-1], Index):
        raise scanner.error("the last segment of a field path may not be a list")
    if len(segments) > 32:
        raise scanner.error("field path too deep")
    return FieldPath(tuple(segments))


def parse_field_selector(text: str) -> list[FieldRequirement]:
    """Parse an enhanced field selector; raises :class:`InvalidQuery`.

    Values may contain ``\\,``, ``\\=``, ``\\\\`` escapes, as Kubernetes field selectors do.
    """

    def read_value(scanner: _Scanner) -> str:
        value = scanner.word(escapes=True)
        if len(value) > 1024:
            raise scanner.error("value too long")
        return value

    return [
        FieldRequirement(path=path, operator=operator, values=values)
        for path, operator, values in _parse(
            text,
            what="field selector",
            read_key=_read_path,
            read_value=read_value,
            allow_compare=False,
        )
    ]
