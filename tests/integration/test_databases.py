"""Each real database server takes a table, a row, and gives the row back (async engine)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from clusterpedia.storage.engine import create_engine

metadata = sa.MetaData()
notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("cluster", sa.String(253), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
)


async def test_create_write_and_read_a_row(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            await connection.execute(
                notes.insert(), [{"id": 1, "cluster": "member-1", "body": b'{"kind":"Pod"}'}]
            )
        async with engine.connect() as connection:
            rows = (await connection.execute(sa.select(notes.c.cluster, notes.c.body))).all()
    finally:
        await engine.dispose()
    assert [(row.cluster, bytes(row.body)) for row in rows] == [("member-1", b'{"kind":"Pod"}')]


async def test_each_module_starts_from_an_empty_database(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    finally:
        await engine.dispose()
    # This module's first test made `notes`; nothing else is there.
    assert tables == ["notes"]


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'wal.sqlite'}")
    try:
        async with engine.connect() as connection:
            mode = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
    finally:
        await engine.dispose()
    assert mode == "wal"
