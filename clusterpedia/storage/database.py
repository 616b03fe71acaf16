"""The SQL implementation of the storage port: one engine, and the parts that share its pool."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from clusterpedia.storage.catalog import TypeCatalog
from clusterpedia.storage.changelog import ChangeLog
from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.errors import database_errors
from clusterpedia.storage.migrate import ensure_schema
from clusterpedia.storage.reader import ResourceReader
from clusterpedia.storage.sql_log import SQLLog
from clusterpedia.storage.writer import ResourceWriter


class Database:
    """SQLite, PostgreSQL or MySQL/MariaDB, by ``url``; see ``storage/port.py``.

    Each part is made on first use: a serving replica never starts the writer's group
    commit, a syncing one never opens the reader's threads.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        allow_where_sql: bool = False,
        replica: bool = False,
        sql_log: SQLLog | None = None,
        **engine_options: Any,
    ):
        self.engine = create_engine(url, **engine_options)
        # A read replica (a hot standby): read only, its pages never older than the client's
        # last, and no NOTIFY to listen for (a standby cannot LISTEN), so its feed polls.
        self.replica = replica
        if sql_log is not None:
            sql_log.install(self.engine.sync_engine)
        self.allow_where_sql = allow_where_sql
        self._objects: ResourceReader | None = None
        self._writes: ResourceWriter | None = None
        self._catalog: TypeCatalog | None = None
        self._changes: ChangeLog | None = None

    @property
    def objects(self) -> ResourceReader:
        if self._objects is None:
            self._objects = ResourceReader(
                self.engine, allow_where_sql=self.allow_where_sql, replica=self.replica
            )
        return self._objects

    @property
    def writes(self) -> ResourceWriter:
        if self._writes is None:
            self._writes = ResourceWriter(self.engine)
        return self._writes

    @property
    def catalog(self) -> TypeCatalog:
        if self._catalog is None:
            self._catalog = TypeCatalog(self.engine)
        return self._catalog

    @property
    def changes(self) -> ChangeLog:
        if self._changes is None:
            self._changes = ChangeLog(self.engine, listen=not self.replica)
        return self._changes

    @database_errors("creating or upgrading the schema")
    async def migrate(self) -> int:
        if self.replica:
            raise RuntimeError("a read replica is migrated through its primary")
        return await ensure_schema(self.engine)

    @database_errors("checking the database")
    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        if self._objects is not None:
            await self._objects.close()
        await self.engine.dispose()
