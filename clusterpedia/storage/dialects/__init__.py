"""One backend per database: every statement and behaviour that differs between SQLite,
PostgreSQL and MySQL/MariaDB, behind the interface of :class:`base.Dialect`.

The writer, reader and change log hold a dialect and never test ``engine.dialect.name``
themselves; a fourth database would be one more module here.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from clusterpedia.storage.dialects.base import BatchKey, Dialect, Queries, StampedGroup
from clusterpedia.storage.dialects.mysql import MySQL
from clusterpedia.storage.dialects.postgresql import PostgreSQL
from clusterpedia.storage.dialects.sqlite import SQLite

__all__ = [
    "BatchKey",
    "Dialect",
    "Queries",
    "StampedGroup",
    "backend_named",
    "dialect_for",
    "queries_for",
]

_BACKENDS: dict[str, type[Dialect]] = {"sqlite": SQLite, "postgresql": PostgreSQL, "mysql": MySQL}


def backend_named(name: str) -> type[Dialect]:
    """The backend of the database SQLAlchemy calls ``name`` (MariaDB is ``mysql``)."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unsupported dialect {name}") from None


def dialect_for(engine: AsyncEngine) -> Dialect:
    """The backend of ``engine``'s database (MariaDB is SQLAlchemy's ``mysql``)."""
    return _BACKENDS[engine.dialect.name](engine)


def queries_for(name: str) -> Queries:
    """How the database called ``name`` reads JSON and labels (no engine needed)."""
    return backend_named(name).queries
