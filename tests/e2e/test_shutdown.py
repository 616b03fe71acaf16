"""SIGTERM ends ``clusterpedia run`` within its grace period while a read is stuck in the
database, on PostgreSQL and MariaDB.

The read is a list whose query cannot finish: the test holds an exclusive lock on the
``resources`` table, the same as a query too heavy to finish before the pod's grace period.
(SQLite has no such lock: a WAL database never makes a reader wait for another connection.)
The process must interrupt the query in the database, answer or close the request, and exit
by itself: with code 0 and well inside ``--shutdown-grace-period``, so the hard deadline is not
what ended it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from clusterpedia.storage.catalog import SyncedType, TypeCatalog
from clusterpedia.storage.engine import dialect_of
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.databases import fresh_database, require_server
from clusterpedia.testing.objects import PODS, make_object, storage, upsert
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually

GRACE = 25  # seconds, given to the process as --shutdown-grace-period
# aiohttp gives an in-flight request 5 s to finish and, once cancelled, 5 s to stop: the
# process must have exited by itself well before the hard deadline.
ORDERLY = 15


@contextlib.contextmanager
def resources_locked(url: str) -> Iterator[sa.Connection]:
    """The ``resources`` table locked against readers until the block ends."""
    engine = sa.create_engine(url.replace("+asyncmy", "+pymysql").replace("+aiosqlite", ""))
    dialect = dialect_of(url)
    try:
        with engine.connect() as connection:
            if dialect == "postgresql":
                connection.exec_driver_sql("LOCK TABLE resources IN ACCESS EXCLUSIVE MODE")
            else:
                connection.exec_driver_sql("LOCK TABLES resources WRITE")
            try:
                yield connection
            finally:
                with contextlib.suppress(sa.exc.DBAPIError):
                    if dialect == "mysql":
                        connection.exec_driver_sql("UNLOCK TABLES")
                    connection.rollback()
    finally:
        engine.dispose()


async def _seed(url: str) -> None:
    """One synced pod type with one pod, so that a list of pods reads the resources table."""
    async with storage(url) as (writer, _):
        await TypeCatalog(writer.engine).replace(
            "stuck", [SyncedType("stuck", "", "v1", "pods", "Pod", True, "pod")]
        )
        pod = make_object(PODS, name="p", namespace="default", cluster="stuck")
        await writer.apply(cluster="stuck", rtype=PODS, changes=[upsert(pod)])


def blocked_reads(connection: sa.Connection, dialect: str) -> int:
    """Reads of the product now waiting for the test's lock."""
    if dialect == "postgresql":
        # Statistics views are a snapshot per transaction, and the lock's transaction is open.
        connection.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%%resources%%'"
        )
    else:
        query = (
            "SELECT count(*) FROM information_schema.processlist "
            "WHERE state LIKE 'Waiting for table%%' AND info LIKE '%%resources%%'"
        )
    return int(connection.exec_driver_sql(query).scalar_one())


@pytest.fixture(params=["postgresql", "mysql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    require_server(request.param)
    with fresh_database(request.param, label="shutdown") as url:
        yield url


def test_sigterm_exits_within_the_grace_period_while_a_read_is_stuck(
    host: APIServer, database_url: str, tmp_path: Path
) -> None:
    dialect = dialect_of(database_url)
    asyncio.run(_seed(database_url))
    product = ProductProcess(
        workdir=tmp_path,
        kubeconfig=host.kubeconfig,
        storage_url=database_url,
        # The request may wait longer than the grace period: only the shutdown can end it.
        extra_args=("--no-operator", f"--shutdown-grace-period={GRACE}", "--request-timeout=300"),
    ).start()
    answers: list[object] = []

    def list_pods() -> None:
        request = urllib.request.Request(
            product.url + "/apis/clusterpedia.io/v1beta1/resources/api/v1/pods?limit=5",
            headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"},
        )
        try:
            with urllib.request.urlopen(
                request, context=product.front_proxy_context(host), timeout=120
            ) as response:
                answers.append(response.status)
        except urllib.error.HTTPError as error:
            answers.append(error.code)
        except OSError as error:  # the connection closed by the stopping server
            answers.append(error)

    try:
        with resources_locked(database_url) as lock:
            reader = threading.Thread(target=list_pods, daemon=True)
            reader.start()
            eventually(lambda: blocked_reads(lock, dialect) >= 1, what="the read is blocked")
            assert reader.is_alive() and not answers
            started = time.monotonic()
            code = product.stop()
            took = time.monotonic() - started
            reader.join(30)
            # Interrupted in the database, not merely abandoned by the process: a backend
            # waiting for a lock would not notice its client's exit.
            eventually(lambda: blocked_reads(lock, dialect) == 0, timeout=10, what="no read")
    finally:
        product.kill()
    log = product.log()
    assert code == 0, log[-3000:]
    assert took < ORDERLY, f"SIGTERM took {took:.1f}s\n{log[-3000:]}"
    assert "shutdown took longer" not in log
    assert answers and not reader.is_alive()  # the client was answered or cut, not left hanging
