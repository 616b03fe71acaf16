"""Storage URLs and asyncio engines for SQLite, PostgreSQL and MySQL/MariaDB.

Users write the URLs they know (``sqlite:///path``, ``postgresql+psycopg://...``,
``mysql+pymysql://...``). The server never blocks its event loop on the database, so each URL is
mapped to the asyncio driver of the same family: psycopg 3 (async natively), aiosqlite, and
asyncmy (a compiled port of pymysql, so pymysql's URL options keep their meaning; aiomysql was
tried first and breaks on bytes parameters with pymysql >= 1.2).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from clusterpedia.storage.dialects import backend_named

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


def create_engine(url: str | URL, **options: Any) -> AsyncEngine:
    """An asyncio engine for ``url``, set up as its database's backend says."""
    target = async_url(url)
    backend = backend_named(target.get_backend_name())
    target = backend.configure(target, options)
    engine = create_async_engine(target, **options)
    event.listen(engine.sync_engine, "connect", backend.on_connect)
    return engine
