"""Storage URLs map to asyncio drivers of the same database family."""

from __future__ import annotations

import pytest

from clusterpedia.storage.engine import StorageURLError, async_url, dialect_of


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///tmp/x.db", "sqlite+aiosqlite"),
        ("sqlite+pysqlite:///tmp/x.db", "sqlite+aiosqlite"),
        ("postgresql://u:p@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg"),
        ("mysql+pymysql://u:p@h/db", "mysql+asyncmy"),
        ("mysql://u:p@h/db", "mysql+asyncmy"),
    ],
)
def test_user_urls_map_to_async_drivers(url: str, driver: str) -> None:
    assert async_url(url).drivername == driver


def test_password_and_database_survive_the_mapping() -> None:
    mapped = async_url("mysql+pymysql://user:s3cr%40t@db.example:3307/pedia")
    assert (mapped.password, mapped.database, mapped.port) == ("s3cr@t", "pedia", 3307)


def test_dialect_names() -> None:
    assert [dialect_of(u) for u in ("sqlite://", "postgresql://h/d", "mysql://h/d")] == [
        "sqlite",
        "postgresql",
        "mysql",
    ]


@pytest.mark.parametrize("url", ["oracle://u:p@h/db", "mssql+pyodbc://h/db"])
def test_unsupported_databases_are_refused_with_a_clear_message(url: str) -> None:
    with pytest.raises(StorageURLError, match="unsupported storage URL scheme"):
        async_url(url)
