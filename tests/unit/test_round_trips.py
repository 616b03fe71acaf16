"""Round trips of the request parsers: what a selector or continue token says is exactly what
parsing gives back (test_hostile_input.py checks the other side: bad input is refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from clusterpedia.search.selectors import (
    parse_field_path,
    parse_field_selector,
    parse_label_selector,
)
from clusterpedia.storage import FieldPath, FieldRequirement, Index, Key, Requirement
from clusterpedia.storage.reader import decode_token, encode_token

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_name = st.builds(
    lambda first, middle, last: first + middle + last,
    st.sampled_from(_ALNUM),
    st.text(alphabet=_ALNUM + "-_.", max_size=20),
    st.sampled_from(_ALNUM),
) | st.sampled_from(_ALNUM)
_label = st.builds(
    lambda prefix, name: f"{prefix}/{name}" if prefix else name,
    st.sampled_from(["", "example.io", "app.kubernetes.io", "a.b-c.d"]),
    _name,
)
_value = st.just("") | _name
_integer = st.integers(-(10**17), 10**17).map(str)


def _label_requirement() -> st.SearchStrategy[Requirement]:
    return st.one_of(
        st.builds(Requirement, _label, st.sampled_from(["exists", "!exists"])),
        st.builds(
            Requirement,
            _label,
            st.sampled_from(["in", "notin"]),
            st.lists(_value, min_size=1, max_size=4).map(tuple),
        ),
        st.builds(Requirement, _label, st.sampled_from(["gt", "lt"]), _integer.map(lambda v: (v,))),
    )


def _render(key: str, operator: str, values: tuple[str, ...]) -> str:
    return {
        "exists": key,
        "!exists": f"!{key}",
        "in": f"{key} in ({','.join(values)})",
        "notin": f"{key} notin ({','.join(values)})",
        "gt": f"{key}>{values[0] if values else ''}",
        "lt": f"{key}<{values[0] if values else ''}",
    }[operator]


@given(st.lists(_label_requirement(), min_size=1, max_size=6))
def test_a_label_selector_parses_back_to_its_requirements(requirements: list[Requirement]) -> None:
    text = ",".join(_render(r.key, r.operator, r.values) for r in requirements)
    assert parse_label_selector(text) == requirements


_segment_key = _name | st.sampled_from(["a.io/b", "kubernetes.io/name", "x-y.z"])


def _field_path(keys: list[str], indices: list[Index | None], last: str) -> FieldPath:
    """Keys, each followed by an optional index, and a last key (never a list)."""
    segments: list[Key | Index] = []
    for key, index in zip(keys, indices + [None] * len(keys), strict=False):
        segments.append(Key(key))
        if index is not None:
            segments.append(index)
    return FieldPath((*segments, Key(last)))


_path = st.builds(
    _field_path,
    st.lists(_segment_key, max_size=4),
    st.lists(st.none() | st.builds(Index, st.none() | st.integers(0, 99)), max_size=4),
    _segment_key,
)


@given(_path)
def test_a_field_path_prints_and_parses_back(path: FieldPath) -> None:
    assert parse_field_path(str(path)) == path


@given(st.lists(st.tuples(_path, st.sampled_from(["in", "notin"]), _name), min_size=1, max_size=4))
def test_a_field_selector_parses_back_to_its_requirements(
    parts: list[tuple[FieldPath, str, str]],
) -> None:
    text = ",".join(f"{path}{'=' if op == 'in' else '!='}{value}" for path, op, value in parts)
    expected = [FieldRequirement(path, op, (value,)) for path, op, value in parts]  # type: ignore[arg-type]
    assert parse_field_selector(text) == expected


_token_value = st.one_of(
    st.tuples(st.just("int"), st.integers(-(2**62) + 1, 2**62 - 1)),
    st.tuples(st.just("text"), st.text(max_size=50)),
    st.tuples(st.just("time"), st.datetimes(min_value=datetime(1970, 1, 1))),
)


@given(
    st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    st.lists(_token_value, min_size=1, max_size=5),
    st.integers(0, 2**62 - 1),
)
def test_a_continue_token_carries_its_values_back(
    fingerprint: str, values: list[tuple[str, Any]], resource_version: int
) -> None:
    token = encode_token(fingerprint, [v for _, v in values], resource_version)
    keys = [(None, False, kind) for kind, _ in values]
    decoded, rv = decode_token(token, fingerprint=fingerprint, keys=keys)  # type: ignore[arg-type]
    assert decoded == [v for _, v in values] and rv == resource_version
