"""kubectl's JSONPath for printer columns: what client-go finds for each form, and the
errors it raises (tests/integration/test_printer_columns.py holds it against a member)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusterpedia.apiserver.jsonpath import JSONPathError, NoValue, find, go_float, go_text, parse

DOC: dict[str, Any] = {
    "metadata": {"name": "g1", "annotations": {"example.io/note": "hi"}},
    "spec": {
        "size": 3,
        "items": [
            {"name": "a", "weight": 1, "image": "nginx"},
            {"name": "b", "weight": 5, "tag": "x"},
            {"name": "c", "weight": 9, "nested": {"image": "redis"}},
        ],
        "labels": {"z": "1", "a": "2"},
    },
    "status": {"conditions": [{"type": "Synced", "status": "False"},
                              {"type": "Ready", "status": "True"}]},
}  # fmt: skip


def values(path: str) -> list[Any]:
    return find(parse(path), DOC)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".spec.size", [3]),
        ("$.spec.size", [3]),
        (".spec['size']", [3]),
        (".metadata.annotations.example\\.io/note", ["hi"]),
        # client-go parses ['a.b'] as .a.b: a quoted key cannot hold a dot
        (".metadata.annotations['example.io/note']", []),
        (".metadata['annotations']", [DOC["metadata"]["annotations"]]),
        (".spec.items[0].name", ["a"]),
        (".spec.items[-1].name", ["c"]),
        (".spec.items[1:].name", ["b", "c"]),
        (".spec.items[::2].name", ["a", "c"]),
        (".spec.items[*].name", ["a", "b", "c"]),
        (".spec.items[0,2].name", ["a", "c"]),
        (".spec['size','missing']", [3]),
        (".spec.labels.*", ["2", "1"]),  # map values in key order
        ('.status.conditions[?(@.type=="Ready")].status', ["True"]),
        (".status.conditions[?(@.type!='Ready')].status", ["False"]),
        (".spec.items[?(@.weight>2)].name", ["b", "c"]),
        (".spec.items[?(@.weight<=5)].name", ["a", "b"]),
        (".spec.items[?(@.tag)].name", ["b"]),
        ("..image", ["nginx", "redis"]),
        (".spec.missing", []),
        (".spec.size.deeper", []),
        (".spec.items[5:5]", []),  # no elements asked for: allowed
    ],
)
def test_paths_find_what_client_go_finds(path: str, expected: list[Any]) -> None:
    assert values(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        ".spec.items[9].name",  # out of bounds
        ".spec.items[::0].name",  # a step of zero
        ".spec.labels[*]",  # [*] is [:], a slice: not of a map
        ".spec.size[0]",  # an index into a number
        '.spec.items[?(@.weight=="5")].name',  # a number compared with a string
    ],
)
def test_failed_evaluations_leave_the_cell_empty(path: str) -> None:
    with pytest.raises(NoValue):
        values(path)


@pytest.mark.parametrize(
    "path",
    ["", "{.spec}", "range .items", ".spec[", ".spec[?(@.a==1]", ".spec[a:b]", ".a[?(@.x=~1)]"],
)
def test_malformed_paths_raise(path: str) -> None:
    with pytest.raises(JSONPathError):
        parse(path)


def test_values_print_as_client_go_prints_them() -> None:
    assert go_text("x") == "x"
    assert go_text(True) == "true"
    assert go_text(3) == "3"
    assert go_text(2.5) == "2.5"
    assert go_text({"z": 1, "a": [1, "b"]}) == '{"a":[1,"b"],"z":1}'
    assert go_text(None) is None
    assert [go_float(v) for v in (1e6, 123456.0, 1234567.0, 1e-05, 0.0001, -0.5)] == [
        "1e+06", "123456", "1.234567e+06", "1e-05", "0.0001", "-0.5",
    ]  # fmt: skip


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_go_floats_read_back_as_the_same_number(value: float) -> None:
    assert float(go_float(value)) == value


_KEYS = st.text(alphabet="abcdefgh", min_size=1, max_size=5)


@given(st.lists(_KEYS, min_size=1, max_size=5), st.integers())
def test_a_dotted_path_finds_what_was_put_there(keys: list[str], leaf: int) -> None:
    document: Any = leaf
    for key in reversed(keys):
        document = {key: document}
    assert find(parse("." + ".".join(keys)), document) == [leaf]
    assert find(parse("".join(f"['{k}']" for k in keys)), document) == [leaf]
