"""Create or upgrade the schema at start-up, idempotently; refuse a schema newer than ours."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clusterpedia.storage.dialects import backend_named
from clusterpedia.storage.schema import (
    HEAD,
    PRUNED,
    SCHEMA_VERSION,
    change_log_marks,
    metadata,
    resource_labels,
    resources,
    schema_info,
)

logger = logging.getLogger(__name__)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer clusterpedia-py; this one must not touch it."""


async def _stored_version(connection: AsyncConnection) -> int | None:
    exists = await connection.run_sync(
        lambda sync: sa.inspect(sync).has_table("clusterpedia_schema")
    )
    if not exists:
        return None
    version = (await connection.execute(sa.select(sa.func.max(schema_info.c.version)))).scalar()
    return None if version is None else int(version)


async def _add_marks(connection: AsyncConnection) -> None:
    """The change log's ``head`` and ``pruned`` rows, unless present."""
    present = set((await connection.execute(sa.select(change_log_marks.c.name))).scalars())
    missing = [{"name": name, "rv": 0} for name in (HEAD, PRUNED) if name not in present]
    if missing:
        await connection.execute(change_log_marks.insert(), missing)


async def ensure_schema(engine: AsyncEngine) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; return the version found before.

    Safe to run from several replicas at once: creation is ``IF NOT EXISTS`` and a replica that
    loses the race re-reads the version.
    """
    for attempt in (1, 2):
        try:
            async with engine.begin() as connection:
                found = await _stored_version(connection)
                if found is not None and found > SCHEMA_VERSION:
                    raise SchemaTooNew(
                        f"the database schema is version {found}, newer than this "
                        f"clusterpedia-py understands ({SCHEMA_VERSION}); upgrade clusterpedia-py"
                    )
                if found == SCHEMA_VERSION:
                    return found
                await connection.run_sync(metadata.create_all, checkfirst=True)
                if found is None:
                    await backend_named(connection.dialect.name).after_create(connection)
                # Versions 2 and 3 only added tables (resource_types, cluster_health), which
                # create_all made above. Version 4 added the change log and stores objects with
                # the global resourceVersion stamped in: older rows lack it, so they are dropped
                # and the sync workers, finding nothing stored, write every object again.
                if found is not None and found < 4:
                    await connection.execute(sa.delete(resource_labels))
                    dropped = (await connection.execute(sa.delete(resources))).rowcount
                    logger.warning(
                        "schema %s -> 4: dropped %d stored objects; they are synced again",
                        found, dropped,
                    )  # fmt: skip
                if found is None or found < 4:
                    await _add_marks(connection)
                if found is not None:
                    await backend_named(connection.dialect.name).upgrade(connection, found)
                if found is None:
                    await connection.execute(
                        schema_info.insert(), {"id": 1, "version": SCHEMA_VERSION}
                    )
                else:
                    await connection.execute(schema_info.update().values(version=SCHEMA_VERSION))
                logger.info("database schema created or upgraded: %s -> %s", found, SCHEMA_VERSION)
                return found or 0
        except DBAPIError as error:
            if attempt == 2 or error.statement is None:  # None: no connection, no race
                raise
            logger.info("schema creation raced with another replica; checking again")
    raise AssertionError("unreachable")
