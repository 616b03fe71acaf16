"""Property tests of every parser a request reaches: whatever the text, the answer is a value
or ``InvalidQuery`` (a 400/422 ``Status``), never another exception (a 500); and user text
reaches SQL only as bound parameters, never in the statement itself."""

from __future__ import annotations

import base64
import contextlib

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import mysql, postgresql, sqlite

from clusterpedia.search.params import parse_order_by, query_from_request
from clusterpedia.search.selectors import (
    parse_field_path,
    parse_field_selector,
    parse_label_selector,
)
from clusterpedia.search.times import parse_search_time
from clusterpedia.storage.compiler import Compiler
from clusterpedia.storage.errors import InvalidQuery
from clusterpedia.storage.query import TypeFilter
from clusterpedia.storage.reader import decode_token, encode_token
from clusterpedia.storage.schema import resources

# Text a user could send, weighted towards what selectors and SQL care about.
SYNTAX = st.sampled_from([*"=!,()[]'\".;-_/ \\<>", "in", "notin", "==", "!=", "in (", "--"])
TEXT = st.one_of(
    st.text(max_size=120),
    st.lists(st.one_of(SYNTAX, st.text(alphabet="abcxyz019.", max_size=5)), max_size=30).map(
        "".join
    ),
)
DIALECTS = {
    "postgresql": postgresql.dialect(),
    "mysql": mysql.dialect(),
    "sqlite": sqlite.dialect(),
}
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def refused_or_parsed(parse, text: str) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(InvalidQuery):
        parse(text)


@FAST
@given(TEXT)
def test_label_selectors(text: str) -> None:
    refused_or_parsed(parse_label_selector, text)


@FAST
@given(TEXT)
def test_field_selectors(text: str) -> None:
    refused_or_parsed(parse_field_selector, text)


@FAST
@given(TEXT)
def test_field_paths(text: str) -> None:
    refused_or_parsed(parse_field_path, text)


@FAST
@given(st.lists(TEXT, max_size=3))
def test_orderby(items: list[str]) -> None:
    refused_or_parsed(parse_order_by, items)


@FAST
@given(TEXT)
def test_search_times(text: str) -> None:
    refused_or_parsed(lambda value: parse_search_time(value, what="since"), text)


KEYS = Compiler("postgresql").sort_keys(
    query_from_request({}, types=(TypeFilter("", "v1", "pods"),))
)


@FAST
@given(st.one_of(TEXT, st.binary(max_size=80).map(lambda b: base64.urlsafe_b64encode(b).decode())))
def test_continue_tokens(text: str) -> None:
    refused_or_parsed(lambda token: decode_token(token, fingerprint="f", keys=KEYS), text)


@FAST
@given(
    st.lists(
        st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.none(), st.booleans()),
        max_size=4,
    )
)
def test_forged_tokens_are_refused(values: list[object]) -> None:
    """A token that decodes, but was not issued for this query, is refused."""
    forged = encode_token("someone-else", values)
    try:
        decode_token(forged, fingerprint="f", keys=KEYS)
    except InvalidQuery:
        return
    raise AssertionError("a token of another query was accepted")


MARK = "zqv"  # no column, keyword or function name contains it


def marked(alphabet: str) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=1, max_size=12).map(lambda t: MARK + t)


@FAST
@given(
    # Label values and keys are validated as Kubernetes names: alphanumeric at both ends.
    label=marked("abc019._-").map(lambda t: t + "0"),
    field=marked("abc'\";-%/*"),  # field values may hold quotes, semicolons, comment marks
    annotation=marked("abc019.-_").map(lambda t: t + "0"),
    name=marked("abc'\";-)( %\\*"),
    namespace=marked("abc'\";-)( %\\*"),
    fuzzy=marked("abc019._-").map(lambda t: t + "0"),
)
def test_user_values_reach_sql_only_as_parameters(
    label: str, field: str, annotation: str, name: str, namespace: str, fuzzy: str
) -> None:
    params = {
        "labelSelector": [
            f"app in ({label}),tier!={label},internalstorage.clusterpedia.io/fuzzy-name={fuzzy}"
        ],
        "fieldSelector": [
            f"spec.nodeName={field},metadata.annotations['{annotation}']!={field},"
            f"spec.containers[].image={field}"
        ],
        "names": [name],
        "namespaces": [namespace],
        "orderby": [f"metadata.labels.{label.replace('.', '')} desc"],
    }
    query = query_from_request(params, types=(TypeFilter("", "v1", "pods"),))
    for dialect, compiled_dialect in DIALECTS.items():
        compiler = Compiler(dialect)
        statement = (
            sa.select(resources.c.object)
            .where(*compiler.where(query))
            .order_by(*(expression for expression, _, _ in compiler.sort_keys(query)))
        )
        sql = str(statement.compile(dialect=compiled_dialect))
        assert MARK not in sql, (dialect, sql)


def test_the_mark_really_is_absent_from_plain_sql() -> None:
    sql = str(
        sa.select(resources.c.object)
        .where(
            *Compiler("postgresql").where(
                query_from_request({}, types=(TypeFilter("", "v1", "pods"),))
            )
        )
        .compile(dialect=postgresql.dialect())
    )
    assert MARK not in sql
