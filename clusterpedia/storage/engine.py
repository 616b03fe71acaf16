"""Storage URLs and asyncio engines for SQLite, PostgreSQL and MySQL/MariaDB.

Users write the URLs they know (``sqlite:///path``, ``postgresql+psycopg://...``,
``mysql+pymysql://...``). The server never blocks its event loop on the database, so each URL is
mapped to the asyncio driver of the same family: psycopg 3 (async natively), aiosqlite, and
asyncmy (a compiled port of pymysql, so pymysql's URL options keep their meaning; aiomysql was
tried first and breaks on bytes parameters with pymysql >= 1.2).
"""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Synchronous or unspecified drivers -> the asyncio driver of the same family.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+asyncmy",
    "mysql+pymysql": "mysql+asyncmy",
    "mysql+asyncmy": "mysql+asyncmy",
    "mysql+aiomysql": "mysql+asyncmy",
    "mariadb": "mysql+asyncmy",
    "mariadb+pymysql": "mysql+asyncmy",
}


class StorageURLError(ValueError):
    """A storage URL names a database or driver this project does not support."""


def async_url(url: str | URL) -> URL:
    """The asyncio-driver form of a user-facing storage URL."""
    parsed = make_url(url) if isinstance(url, str) else url
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        supported = "sqlite:///PATH, postgresql+psycopg://..., mysql+pymysql://..."
        raise StorageURLError(
            f"unsupported storage URL scheme {parsed.drivername!r}; use one of: {supported}"
        )
    return parsed.set(drivername=driver)


def dialect_of(url: str | URL) -> str:
    """``sqlite``, ``postgresql`` or ``mysql``."""
    return async_url(url).get_backend_name()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; NORMAL sync is durable in WAL mode except
    # for the last transactions on power loss; busy_timeout makes writers wait, not fail.
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "busy_timeout=10000",
        "foreign_keys=ON",
        "temp_store=MEMORY",
        # 64 MiB of page cache (the default is 2 MiB): batches touch index pages all over the
        # table, and re-reading them dominated write time at 100k rows (bench/storage.py).
        "cache_size=-65536",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


class _BinaryResultCursor(psycopg.AsyncCursor[Any]):
    """Asks PostgreSQL for results in binary format: ``bytea`` objects then arrive as raw
    bytes rather than hex text the client must decode, which halves the cost of a page of
    objects (bench/storage.py)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.format = psycopg.pq.Format.BINARY


class _BinaryResultServerCursor(psycopg.AsyncServerCursor[Any]):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.format = psycopg.pq.Format.BINARY


def _postgres_binary_results(dbapi_connection: Any, _record: Any) -> None:
    driver = dbapi_connection.driver_connection
    driver.cursor_factory = _BinaryResultCursor
    driver.server_cursor_factory = _BinaryResultServerCursor
    prefer_lz4(dbapi_connection)


def prefer_lz4(dbapi_connection: Any) -> None:
    """Compress new values with lz4 in this session. The column's own lz4 setting is not
    enough: the writer stages rows in a temporary table, and PostgreSQL copies an already
    compressed value as it is, so staged rows kept the default pglz, which decompresses
    several times slower on every read."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET default_toast_compression = 'lz4'")
    except Exception:  # a server built without lz4 keeps pglz
        dbapi_connection.rollback()
    finally:
        cursor.close()


def create_engine(url: str | URL, **options: Any) -> AsyncEngine:
    """An asyncio engine for ``url`` with per-dialect settings applied."""
    target = async_url(url)
    backend = target.get_backend_name()
    if backend == "mysql":
        options.setdefault("pool_recycle", 3600)  # the server closes idle connections
        if "charset" not in target.query:
            target = target.update_query_dict({"charset": "utf8mb4"})
    if backend != "sqlite":
        options.setdefault("pool_pre_ping", True)
    engine = create_async_engine(target, **options)
    if backend == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    elif backend == "postgresql":
        event.listen(engine.sync_engine, "connect", _postgres_binary_results)
    return engine
