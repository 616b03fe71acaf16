"""The SQL each dialect compiles, checked offline (no database): user values never reach the
statement text, each dialect uses its own JSON functions, and the writer's statements keep
the properties the write path relies on."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from clusterpedia.search.params import query_from_request
from clusterpedia.storage import Query, TypeFilter
from clusterpedia.storage.compiler import Compiler
from clusterpedia.storage.dialects import mysql as mysql_backend
from clusterpedia.storage.dialects import postgresql as postgresql_backend
from clusterpedia.storage.dialects import sqlite as sqlite_backend
from clusterpedia.storage.schema import resources

DIALECTS = {
    "postgresql": postgresql.dialect(),
    "mysql": mysql.dialect(),
    "sqlite": sqlite.dialect(),
}
# Values a user sends, each distinctive enough to spot in SQL text.
HOSTILE = "x'); DROP TABLE resources; --"


def compiled(dialect: str, query: Query) -> tuple[str, dict[str, Any]]:
    compiler = Compiler(dialect)
    statement = sa.select(resources.c.name).where(*compiler.where(query))
    statement = statement.order_by(*(e for e, _, _ in compiler.sort_keys(query)))
    result = statement.compile(dialect=DIALECTS[dialect])
    return str(result), dict(result.params)


def search(**params: str) -> Query:
    """The query of a pods list with these URL parameters, in cluster cq71 and namespace nsq7."""
    query = query_from_request(
        {k: [v] for k, v in params.items()}, types=(TypeFilter("", "v1", "pods"),)
    )
    return replace(query, clusters=("cq71",), namespaces=("nsq7",), fuzzy_names=("we",))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_user_values_are_bound_never_pasted(dialect: str) -> None:
    query = search(
        labelSelector="app in (a,b),tier!=web",
        fieldSelector="status.phase=Running,spec.containers[].image=nginx",
    )
    text, params = compiled(dialect, query)
    for value in ("Running", "nginx", "cq71", "nsq7", "web"):
        assert value not in text, f"{value} pasted into {dialect} SQL"
        assert value in repr(params)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_hostile_name_stays_a_parameter(dialect: str) -> None:
    text, params = compiled(dialect, Query(names=(HOSTILE,), fuzzy_names=("ab",)))
    assert "DROP TABLE" not in text
    assert HOSTILE in params.values()


@pytest.mark.parametrize(
    ("dialect", "expected", "absent"),
    [
        ("postgresql", ["convert_from", "#>>", 'COLLATE "C"', "strpos"], ["json_extract"]),
        ("mysql", ["JSON_UNQUOTE(JSON_EXTRACT", "utf8mb4_bin", "instr"], ["#>>"]),
        ("sqlite", ["json_type", "json_extract", "instr"], ["#>>", "JSON_UNQUOTE"]),
    ],
)
def test_each_dialect_reads_json_its_own_way(
    dialect: str, expected: list[str], absent: list[str]
) -> None:
    text, _ = compiled(dialect, search(fieldSelector="status.phase=Running"))
    for fragment in expected:
        assert fragment in text, f"{dialect}: no {fragment!r} in {text}"
    for fragment in absent:
        assert fragment not in text


def test_mysql_upsert_updates_resource_version_last_and_only_when_it_changed() -> None:
    text = str(mysql_backend._UPSERT.compile(dialect=DIALECTS["mysql"]))
    update = text.split("ON DUPLICATE KEY UPDATE", 1)[1]
    assignments = [part.strip().split(" = ")[0] for part in update.split("), ")]
    assert assignments[-1].strip("` ").startswith("resource_version")
    assert update.count("IF(") == len(mysql_backend._UPDATED_COLUMNS)


def test_postgresql_allocation_notifies_in_the_same_statement() -> None:
    text = str(postgresql_backend._ALLOCATE)
    assert "RETURNING rv" in text and f"pg_notify('{postgresql_backend.NOTIFY_CHANNEL}'" in text
    assert "IS DISTINCT FROM excluded.resource_version" in str(postgresql_backend._UPSERT)


def test_sqlite_upsert_skips_unchanged_rows() -> None:
    assert "WHERE resources.resource_version IS NOT excluded.resource_version" in (
        sqlite_backend._UPSERT
    )
    assert sqlite_backend._UPSERT.count("?") == 15
