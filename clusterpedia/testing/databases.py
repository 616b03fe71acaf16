"""Fresh, throw-away databases on real SQLite, PostgreSQL and MariaDB/MySQL servers.

The servers themselves are started by the test command (``hack/test``); this module only creates
and drops one database per user (a test module, a benchmark). Server URLs come from the
environment, with the defaults ``hack/test`` sets up:

- ``CLUSTERPEDIA_TEST_POSTGRES_URL`` (``postgresql+psycopg://clusterpedia:clusterpedia@127.0.0.1:5432/postgres``)
- ``CLUSTERPEDIA_TEST_MYSQL_URL`` (``mysql+pymysql://clusterpedia:clusterpedia@127.0.0.1:3306/mysql``)
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pymysql
from sqlalchemy.engine import URL, make_url

DIALECTS = ("sqlite", "postgresql", "mysql")

DEFAULT_SERVER_URLS = {
    "postgresql": "postgresql+psycopg://clusterpedia:clusterpedia@127.0.0.1:5432/postgres",
    "mysql": "mysql+pymysql://clusterpedia:clusterpedia@127.0.0.1:3306/mysql",
}
_ENV = {"postgresql": "CLUSTERPEDIA_TEST_POSTGRES_URL", "mysql": "CLUSTERPEDIA_TEST_MYSQL_URL"}


PostgresConnection = psycopg.Connection[tuple[Any, ...]]


class DatabaseUnavailable(RuntimeError):
    """The database server for a dialect cannot be reached."""


def require_server(dialect: str) -> None:
    """In a test: skip without this database server, but fail where every component must be
    present (``CLUSTERPEDIA_TEST_REQUIRE_ALL=1``, as hack/test sets it)."""
    import pytest  # only tests call this; the package does not depend on pytest

    try:
        server_version(dialect)
    except DatabaseUnavailable as error:
        if os.environ.get("CLUSTERPEDIA_TEST_REQUIRE_ALL") == "1":
            pytest.fail(str(error))
        pytest.skip(str(error))


def server_url(dialect: str) -> URL:
    """The administrative URL of the test server for ``dialect`` (postgresql or mysql)."""
    return make_url(os.environ.get(_ENV[dialect]) or DEFAULT_SERVER_URLS[dialect])


def _connect_postgres(url: URL, *, dbname: str | None = None) -> PostgresConnection:
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=dbname or url.database,
        autocommit=True,
        connect_timeout=5,
    )


def _connect_mysql(url: URL) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    return pymysql.connect(
        host=url.host,
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        connect_timeout=5,
        autocommit=True,
    )


def server_version(dialect: str) -> str:
    """The server's own version string; raises :class:`DatabaseUnavailable`."""
    if dialect == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    url = server_url(dialect)
    try:
        if dialect == "postgresql":
            with _connect_postgres(url) as connection:
                row = connection.execute("SELECT version()").fetchone()
        else:
            with _connect_mysql(url) as connection, connection.cursor() as cursor:
                cursor.execute("SELECT VERSION()")
                row = cursor.fetchone()
    except (psycopg.Error, pymysql.MySQLError) as error:
        raise DatabaseUnavailable(
            f"{dialect} test server at {url.render_as_string(hide_password=True)} is not "
            f"reachable ({error}); run hack/test, which starts it, or set {_ENV[dialect]}"
        ) from error
    assert row is not None
    return str(row[0]).split(" on ")[0]


def _drop_postgres_database(url: URL, name: str, *, attempts: int = 30) -> None:
    """Drop ``name``, ending our own leftover sessions. An autovacuum worker (the superuser's,
    which our role may not end) can hold the database for a moment after a bulk load: wait."""
    for attempt in range(attempts):
        try:
            with _connect_postgres(url) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg.errors.InsufficientPrivilege:
            if attempt == attempts - 1:
                raise
            time.sleep(1)


@contextmanager
def fresh_database(dialect: str, *, label: str = "test") -> Iterator[str]:
    """Create an empty database, yield its user-facing URL, and drop it afterwards."""
    if dialect == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"clusterpedia-{label}-") as directory:
            yield f"sqlite:///{Path(directory) / 'clusterpedia.sqlite'}"
        return

    server_version(dialect)  # a clear DatabaseUnavailable before anything else
    url = server_url(dialect)
    # Only [a-z0-9_] reaches the DDL below, so the name needs no quoting rules of its own.
    name = f"cpt_{re.sub(r'[^a-z0-9_]', '_', label.lower())[-24:]}_{secrets.token_hex(4)}"
    if dialect == "postgresql":
        with _connect_postgres(url) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            _drop_postgres_database(url, name)
    elif dialect == "mysql":
        with _connect_mysql(url) as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            with _connect_mysql(url) as connection, connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    else:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {DIALECTS}")
