"""Go's ``text/template`` with the sprig functions the original's import policies use.

ClusterImportPolicy templates are Go templates (``{{ .source.metadata.name }}``, ``range``,
``if``/``else``, pipelines, ``index``, ``b64dec``...), rendered over plain JSON data. This is
the part of the language those templates and the original's docs use; anything else is a
:class:`TemplateError` that names it, never a silent empty string.

Missing data renders as ``<no value>``, as Go's does (the policy code then treats it as empty).

A template comes from whoever may write a policy, and runs over data it does not control, so
every render has a :class:`Budget`: steps (actions, commands and loop iterations), the size of
the output and of any one value, and a time limit; ``printf`` keeps Go's width and precision
cap. Exceeding one is a :class:`BudgetExceeded` naming the limit. Errors never quote the
data a template renders (it may hold a Secret's token): they name types and positions.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

NO_VALUE = "<no value>"


class TemplateError(ValueError):
    """The template does not parse, or uses what is not supported here."""


class BudgetExceeded(TemplateError):
    """A render went past one of its :class:`Budget`'s limits, named by ``limit``."""

    def __init__(self, limit: str, message: str):
        super().__init__(message)
        self.limit = limit


# Go's fmt refuses widths and precisions above this (%!(BADWIDTH), %!(BADPREC)).
GO_FMT_MAX = 1_000_000


@dataclass(frozen=True)
class Budget:
    """What one render may use."""

    steps: int = 100_000
    output: int = 1 << 20  # characters, of the output and of any one value
    seconds: float = 2.0


class _Meter:
    """A render's use of its budget."""

    def __init__(self, budget: Budget):
        self.budget = budget
        self.steps = 0
        self.output = 0
        self.deadline = time.monotonic() + budget.seconds

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.budget.steps:
            raise BudgetExceeded(
                "steps", f"the template took more than its {self.budget.steps} steps"
            )
        if self.steps % 64 == 0 and time.monotonic() > self.deadline:
            raise BudgetExceeded(
                "time", f"the template ran longer than its {self.budget.seconds:g}s"
            )

    def value(self, value: Any) -> Any:
        if isinstance(value, str) and len(value) > self.budget.output:
            raise BudgetExceeded(
                "output", f"the template made a value over {self.budget.output} characters"
            )
        return value

    def emit(self, text: str, out: list[str]) -> None:
        self.output += len(text)
        if self.output > self.budget.output:
            raise BudgetExceeded(
                "output", f"the template rendered more than {self.budget.output} characters"
            )
        out.append(text)


# -- lexing: text and actions ---------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<declare>:=)
    | (?P<assign>=)
    | (?P<pipe>\|)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<comma>,)
    | (?P<variable>\$[A-Za-z0-9_]*)
    | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


@dataclass
class _Token:
    kind: str
    text: str


def _tokens(source: str) -> list[_Token]:
    out: list[_Token] = []
    position = 0
    source = source.strip()
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None or match.end() == position:
            raise TemplateError(f"unexpected {source[position : position + 20]!r} in an action")
        kind = match.lastgroup or ""
        text = match.group(kind)
        # a field right after a closing parenthesis or variable chains on it: (x).a, $x.a
        if kind == "field" and out and out[-1].kind in ("close", "variable") and \
                match.start(kind) == match.start():  # fmt: skip
            kind = "chain"
        out.append(_Token(kind, text))
        position = match.end()
    return out


# -- syntax tree ----------------------------------------------------------------------------


@dataclass
class _Text:
    text: str


@dataclass
class _Pipeline:
    commands: list[list[Any]]  # each: operands (a function name first, or one value)
    declare: list[str] = field(default_factory=list)  # $x := / $i, $v := (range)
    assign: bool = False  # $x = ...


@dataclass
class _Output:
    pipeline: _Pipeline


@dataclass
class _If:
    kind: str  # if | with | range
    pipeline: _Pipeline
    body: list[Any]
    otherwise: list[Any] = field(default_factory=list)


@dataclass
class _Field:
    base: Any  # "." (dot), a variable name, or a sub-pipeline
    path: list[str]


@dataclass
class _Function:
    name: str


def _parse(source: str) -> list[Any]:
    """Text and actions into a tree of nodes."""
    pieces: list[Any] = []
    position = 0
    for match in _ACTION.finditer(source):
        text = source[position : match.start()]
        if match.group(1):
            text = text.rstrip()
        pieces.append(_Text(text))
        pieces.append(("action", match.group(2), bool(match.group(3))))
        position = match.end()
    pieces.append(_Text(source[position:]))
    for piece in pieces:
        if isinstance(piece, _Text) and "{{" in piece.text:
            raise TemplateError(
                f"unclosed action near {piece.text[piece.text.index('{{') :][:30]!r}"
            )
    # trim markers on the right apply to the text that follows
    for index, piece in enumerate(pieces):
        if isinstance(piece, tuple) and piece[2] and index + 1 < len(pieces):
            following = pieces[index + 1]
            following.text = following.text.lstrip()
    root: list[Any] = []
    stack: list[tuple[Any, list[Any]]] = [(None, root)]
    for piece in pieces:
        body = stack[-1][1]
        if isinstance(piece, _Text):
            if piece.text:
                body.append(piece)
            continue
        action = piece[1].strip()
        if action.startswith("/*"):
            continue  # a comment
        words = action.split(None, 1)
        keyword = words[0] if words else ""
        rest = words[1] if len(words) > 1 else ""
        if keyword in ("if", "with", "range"):
            node = _If(keyword, _pipeline(rest, allow_declare=keyword != "if"), [])
            body.append(node)
            stack.append((node, node.body))
        elif keyword == "else":
            node_open = stack[-1][0]
            if node_open is None:
                raise TemplateError("{{ else }} outside if, with or range")
            stack.pop()
            if rest.startswith(("if ", "with ")):  # else if / else with: a nested block
                inner_kind, _, inner = rest.partition(" ")
                nested = _If(inner_kind, _pipeline(inner, allow_declare=inner_kind == "with"), [])
                node_open.otherwise.append(nested)
                # the nested block ends with the outer {{ end }}
                stack.append((_Chained(node_open, nested), nested.body))
            else:
                stack.append((node_open, node_open.otherwise))
        elif keyword == "end":
            opened = stack.pop()[0] if len(stack) > 1 else None
            if opened is None:
                raise TemplateError("{{ end }} without if, with or range")
        elif keyword in ("define", "template", "block", "break", "continue"):
            raise TemplateError(f"{{{{ {keyword} }}}} is not supported in import policies")
        else:
            body.append(_Output(_pipeline(action, allow_declare=True)))
    if len(stack) != 1:
        raise TemplateError("a block (if, with or range) has no {{ end }}")
    return root


@dataclass
class _Chained:
    """An else-if block: its own body, closed by the outer block's end."""

    outer: _If
    inner: _If

    @property
    def otherwise(self) -> list[Any]:
        return self.inner.otherwise


def _pipeline(source: str, *, allow_declare: bool) -> _Pipeline:
    tokens = _tokens(source)
    declare: list[str] = []
    assign = False
    for index, token in enumerate(tokens):
        if token.kind in ("declare", "assign"):
            names = [t.text for t in tokens[:index] if t.kind == "variable"]
            if (
                not allow_declare
                or not names
                or len(names) != len([t for t in tokens[:index] if t.kind != "comma"])
            ):
                raise TemplateError(f"bad variable declaration in {{{{ {source} }}}}")
            declare, assign, tokens = names, token.kind == "assign", tokens[index + 1 :]
            break
    commands, position = _commands(tokens, 0, source)
    if position != len(tokens):
        raise TemplateError(f"unexpected {tokens[position].text!r} in {{{{ {source} }}}}")
    return _Pipeline(commands, declare, assign)


def _commands(tokens: list[_Token], position: int, source: str) -> tuple[list[list[Any]], int]:
    commands: list[list[Any]] = [[]]
    while position < len(tokens):
        token = tokens[position]
        if token.kind == "close":
            break
        if token.kind == "pipe":
            commands.append([])
            position += 1
            continue
        operand, position = _operand(tokens, position, source)
        commands[-1].append(operand)
    if any(not command for command in commands):
        raise TemplateError(f"an empty command in {{{{ {source} }}}}")
    return commands, position


def _operand(tokens: list[_Token], position: int, source: str) -> tuple[Any, int]:
    token = tokens[position]
    if token.kind == "open":
        inner, end = _commands(tokens, position + 1, source)
        if end >= len(tokens) or tokens[end].kind != "close":
            raise TemplateError(f"unclosed parenthesis in {{{{ {source} }}}}")
        value: Any = _Pipeline(inner)
        position = end + 1
        if position < len(tokens) and tokens[position].kind == "chain":
            value = _Field(value, tokens[position].text.split(".")[1:])
            position += 1
        return value, position
    position += 1
    if token.kind == "string":
        text = token.text
        return (json.loads(text) if text.startswith('"') else text[1:-1]), position
    if token.kind == "number":
        return (float(token.text) if "." in token.text else int(token.text)), position
    if token.kind == "field":
        return _Field(".", [] if token.text == "." else token.text.split(".")[1:]), position
    if token.kind == "variable":
        path: list[str] = []
        if position < len(tokens) and tokens[position].kind == "chain":
            path = tokens[position].text.split(".")[1:]
            position += 1
        return _Field(token.text, path), position
    if token.kind == "word":
        constants = {"true": True, "false": False, "nil": None}
        if token.text in constants:
            return constants[token.text], position
        if token.text not in FUNCTIONS:
            raise TemplateError(f"function {token.text!r} is not supported in import policies")
        return _Function(token.text), position
    raise TemplateError(f"unexpected {token.text!r} in {{{{ {source} }}}}")


# -- evaluation -------------------------------------------------------------------------------


class _Missing:
    """Absent data: prints as Go's ``<no value>``, is false, and stays absent down a path."""

    def __repr__(self) -> str:
        return NO_VALUE


MISSING = _Missing()


def truthy(value: Any) -> bool:
    """Go's truth: false, 0, nil, and empty strings, lists and maps are false."""
    if value is MISSING or value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | tuple | dict):
        return len(value) > 0
    return True


def show(value: Any) -> str:
    """A value as Go's fmt prints it with %v."""
    if value is MISSING or value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{show(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(show(v) for v in value) + "]"
    return str(value)


def _step(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(name, MISSING)
    return MISSING


class _Scope:
    def __init__(self, dot: Any, variables: dict[str, Any], meter: _Meter):
        self.dot = dot
        self.variables = variables
        self.meter = meter


def _value(operand: Any, scope: _Scope) -> Any:
    if isinstance(operand, _Field):
        if operand.base == ".":
            value = scope.dot
        elif isinstance(operand.base, _Pipeline):
            value = _run(operand.base, scope)
        else:
            if operand.base not in scope.variables:
                raise TemplateError(f"undefined variable {operand.base}")
            value = scope.variables[operand.base]
        for name in operand.path:
            value = _step(value, name)
        return value
    if isinstance(operand, _Pipeline):
        return _run(operand, scope)
    if isinstance(operand, _Function):
        return FUNCTIONS[operand.name]()
    return operand


def _run(pipeline: _Pipeline, scope: _Scope) -> Any:
    result: Any = MISSING
    for index, command in enumerate(pipeline.commands):
        scope.meter.step()
        head, arguments = command[0], command[1:]
        values = [_value(a, scope) for a in arguments]
        if index > 0:
            values.append(result)  # a pipeline passes the previous result last
        if isinstance(head, _Function):
            try:
                result = scope.meter.value(FUNCTIONS[head.name](*values))
            except TemplateError:
                raise
            except TypeError as error:
                raise TemplateError(f"{head.name}: wrong arguments ({error})") from None
        elif values:
            raise TemplateError("only a function takes arguments")
        else:
            result = _value(head, scope)
    return result


def _execute(nodes: Sequence[Any], scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        scope.meter.step()
        if isinstance(node, _Text):
            scope.meter.emit(node.text, out)
        elif isinstance(node, _Output):
            value = _run(node.pipeline, scope)
            if node.pipeline.declare:
                scope.variables[node.pipeline.declare[0]] = value
            else:
                scope.meter.emit(show(value), out)
        elif isinstance(node, _If):
            _block(node, scope, out)


def _block(node: _If, scope: _Scope, out: list[str]) -> None:
    value = _run(node.pipeline, scope)
    variables = dict(scope.variables)
    if node.kind == "range":
        items: Iterator[tuple[Any, Any]]
        if isinstance(value, Mapping):
            items = ((k, value[k]) for k in sorted(value))
        elif isinstance(value, list | tuple):
            items = enumerate(value)
        elif not truthy(value):
            items = iter(())
        else:
            raise TemplateError(f"range over {type(value).__name__} is not supported")
        ran = False
        for key, element in items:
            scope.meter.step()
            ran = True
            names = node.pipeline.declare
            if len(names) == 1:
                variables[names[0]] = element
            elif len(names) == 2:
                variables[names[0]], variables[names[1]] = key, element
            _execute(node.body, _Scope(element, variables, scope.meter), out)
        if not ran:
            _execute(node.otherwise, _Scope(scope.dot, variables, scope.meter), out)
        return
    if truthy(value):
        if node.pipeline.declare:
            variables[node.pipeline.declare[0]] = value
        dot = value if node.kind == "with" else scope.dot
        _execute(node.body, _Scope(dot, variables, scope.meter), out)
    else:
        _execute(node.otherwise, _Scope(scope.dot, variables, scope.meter), out)


def render(source: str, data: Mapping[str, Any], budget: Budget | None = None) -> str:
    """``source`` executed over ``data`` (the template's dot), within ``budget``. CPU-bound
    for up to the budget's time: call it off the event loop."""
    out: list[str] = []
    meter = _Meter(budget or Budget())
    _execute(_parse(source), _Scope(data, {"$": data}, meter), out)
    return "".join(out)


def check(source: str) -> None:
    """Raise :class:`TemplateError` if ``source`` does not parse."""
    _parse(source)


# -- functions: Go's builtins and the sprig ones the policies use -------------------------------


def _plain(value: Any) -> Any:
    return None if value is MISSING else value


def _eq(first: Any, *others: Any) -> bool:
    return any(_plain(first) == _plain(other) for other in others)


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        try:
            return op(_plain(a), _plain(b))
        except TypeError:
            raise TemplateError(
                f"incompatible types for comparison: {type(_plain(a)).__name__} and "
                f"{type(_plain(b)).__name__}"
            ) from None

    return compare


def _and(*values: Any) -> Any:
    for value in values:
        if not truthy(value):
            return value
    return values[-1]


def _or(*values: Any) -> Any:
    for value in values:
        if truthy(value):
            return value
    return values[-1]


def _index(collection: Any, *keys: Any) -> Any:
    value = collection
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key, MISSING)
        elif isinstance(value, list | tuple) and isinstance(key, int):
            if not 0 <= key < len(value):
                raise TemplateError(f"index out of range (length {len(value)})")
            value = value[key]
        elif value is MISSING or value is None:
            return MISSING
        else:
            raise TemplateError(f"cannot index {type(value).__name__} with {type(key).__name__}")
    return value


def _length(value: Any) -> int:
    if value is MISSING or value is None:
        return 0
    if isinstance(value, str | list | tuple | Mapping):
        return len(value)
    raise TemplateError(f"len of {type(value).__name__}")


def _b64dec(value: Any) -> str:
    try:
        return base64.b64decode(str(_plain(value) or ""), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise TemplateError("b64dec: not base64") from None


def _text(value: Any) -> str:
    value = _plain(value)
    return "" if value is None else show(value)


def _default(fallback: Any, value: Any = MISSING) -> Any:
    return value if truthy(value) else fallback


def _get(mapping: Any, key: Any) -> Any:
    return mapping.get(key, "") if isinstance(mapping, Mapping) else ""


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(_plain(value), default_flow_style=False).rstrip("\n")


_VERB = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:\.(\*|\d+))?(.?)")


def _checked_verb(match: re.Match[str]) -> str:
    """One ``%`` directive, refused past Go's width and precision cap (a width of 1e9 would
    take gigabytes to print); ``*`` (a width from the arguments) is not supported."""
    width, precision, verb = match.group(2), match.group(3), match.group(4)
    for what, number in (("width", width), ("precision", precision)):
        if number == "*":
            raise TemplateError(f"printf: a {what} of '*' is not supported in import policies")
        if number is not None and int(number) > GO_FMT_MAX:
            raise BudgetExceeded(f"printf {what}", f"printf: {what} above Go's {GO_FMT_MAX}")
    if verb in ("v", "s", "d", "q"):
        return match.group(0)[:-1] + ("r" if verb == "q" else "s")
    return match.group(0)


def _printf(pattern: str, *values: Any) -> str:
    converted = _VERB.sub(_checked_verb, _text(pattern))
    shown = tuple(show(v) if not isinstance(v, int | float) else v for v in values)
    try:
        return converted % shown
    except (TypeError, ValueError):
        raise TemplateError("printf: the format does not fit its arguments") from None


def _replace(old: Any, new: Any, value: Any) -> str:
    text, old, new = _text(value), _text(old), _text(new)
    grows = (text.count(old) if old else len(text) + 1) * max(len(new) - len(old), 0)
    if len(text) + grows > Budget.output:
        raise BudgetExceeded("output", "replace: the result would be too large")
    return text.replace(old, new)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _compare(lambda a, b: a < b),
    "le": _compare(lambda a, b: a <= b),
    "gt": _compare(lambda a, b: a > b),
    "ge": _compare(lambda a, b: a >= b),
    "and": _and,
    "or": _or,
    "not": lambda value: not truthy(value),
    "index": _index,
    "len": _length,
    "print": lambda *values: "".join(_text(v) for v in values),
    "printf": _printf,
    # sprig
    "default": _default,
    "empty": lambda value=MISSING: not truthy(value),
    "coalesce": lambda *values: next((v for v in values if truthy(v)), None),
    "ternary": lambda yes, no, condition: yes if truthy(condition) else no,
    "b64enc": lambda value: base64.b64encode(_text(value).encode()).decode(),
    "b64dec": _b64dec,
    "quote": lambda *values: " ".join(json.dumps(_text(v)) for v in values),
    "squote": lambda *values: " ".join(f"'{_text(v)}'" for v in values),
    "upper": lambda value: _text(value).upper(),
    "lower": lambda value: _text(value).lower(),
    "trim": lambda value: _text(value).strip(),
    "trimPrefix": lambda prefix, value: _text(value).removeprefix(prefix),
    "trimSuffix": lambda suffix, value: _text(value).removesuffix(suffix),
    "hasPrefix": lambda prefix, value: _text(value).startswith(prefix),
    "hasSuffix": lambda suffix, value: _text(value).endswith(suffix),
    "contains": lambda part, value: part in _text(value),
    "replace": _replace,
    "split": lambda sep, value: {f"_{i}": p for i, p in enumerate(_text(value).split(sep))},
    "join": lambda sep, values: sep.join(_text(v) for v in (_plain(values) or ())),
    "get": _get,
    "hasKey": lambda mapping, key: isinstance(mapping, Mapping) and key in mapping,
    "toYaml": _to_yaml,
    "toJson": lambda value: json.dumps(_plain(value), separators=(",", ":")),
}
