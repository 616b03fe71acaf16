"""The storage config's SQL log on a real (SQLite) engine: slow statements at Warn, every
statement at Info, failed ones at Error; written where the config says."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from clusterpedia.storage import Database
from clusterpedia.storage.sql_log import RotatedFile, SQLLog, close_destination


@pytest.fixture(autouse=True)
def fresh_logger() -> Iterator[None]:
    """The SQL log's destination is per process: each test starts without one."""
    yield
    close_destination()


async def run(tmp_path: Path, log: SQLLog, statement: str = "SELECT 1") -> None:
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}", sql_log=log)
    try:
        async with database.engine.connect() as connection:
            await connection.execute(sa.text(statement))
    finally:
        await database.close()


async def test_warn_writes_statements_slower_than_the_threshold_to_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "logs" / "sql.log"
    await run(tmp_path, SQLLog(slow_seconds=1e-9, file=RotatedFile(filename=str(path))))
    assert "slow SQL" in path.read_text() and "SELECT 1" in path.read_text()
    quiet = tmp_path / "quiet.log"
    close_destination()
    await run(tmp_path, SQLLog(slow_seconds=60, file=RotatedFile(filename=str(quiet))))
    assert quiet.read_text() == ""


async def test_info_writes_every_statement_and_error_the_failed_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await run(tmp_path, SQLLog(level="Info", stdout=True))
    assert "ms: SELECT 1" in capsys.readouterr().out
    with pytest.raises(sa.exc.OperationalError):
        await run(tmp_path, SQLLog(level="Error", stdout=True), "SELECT * FROM missing")
    assert "SQL failed" in capsys.readouterr().out


async def test_silent_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await run(tmp_path, SQLLog(level="Silent", stdout=True), "SELECT 1")
    with pytest.raises(sa.exc.OperationalError):
        await run(tmp_path, SQLLog(level="Silent", stdout=True), "SELECT * FROM missing")
    assert capsys.readouterr().out == ""


def test_rotation_compresses_backups(tmp_path: Path) -> None:
    log = SQLLog(
        level="Info",
        file=RotatedFile(filename=str(tmp_path / "sql.log"), max_megabytes=1, compress=True),
    )
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    log.install(engine)
    with engine.connect() as connection:
        for _ in range(1200):  # > 1 MB of log lines
            connection.execute(sa.text("SELECT '" + "x" * 1000 + "'"))
    engine.dispose()
    close_destination()
    backup = tmp_path / "sql.log.1.gz"
    assert backup.exists()
    assert b"SELECT 'xxx" in gzip.decompress(backup.read_bytes())
