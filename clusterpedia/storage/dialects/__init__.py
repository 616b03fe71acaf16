"""One backend per database: every statement and behaviour that differs between SQLite,
PostgreSQL and MySQL/MariaDB, behind the interface of :class:`base.Dialect`.

The writer, reader and change log hold a dialect and never test ``engine.dialect.name``
themselves; a fourth database would be one more module here.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from clusterpedia.storage.dialects.base import Dialect, Scope, StampedGroup
from clusterpedia.storage.dialects.mysql import MySQL
from clusterpedia.storage.dialects.postgresql import PostgreSQL
from clusterpedia.storage.dialects.sqlite import SQLite

__all__ = ["Dialect", "Scope", "StampedGroup", "dialect_for"]

_BACKENDS: dict[str, type[Dialect]] = {"sqlite": SQLite, "postgresql": PostgreSQL, "mysql": MySQL}


def dialect_for(engine: AsyncEngine) -> Dialect:
    """The backend of ``engine``'s database (MariaDB is SQLAlchemy's ``mysql``)."""
    return _BACKENDS[engine.dialect.name](engine)
