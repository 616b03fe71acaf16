"""The write path on SQLite, PostgreSQL and MariaDB: batches, skips, deletes, atomicity."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from clusterpedia.search.params import query_from_request
from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.errors import StorageFailed
from clusterpedia.storage.migrate import SchemaTooNew, ensure_schema
from clusterpedia.storage.query import Query, TypeFilter
from clusterpedia.storage.records import Delete, stamp_resource_version, upsert_from_object
from clusterpedia.storage.schema import SCHEMA_VERSION, resources, schema_info
from clusterpedia.testing.objects import DEPLOYMENTS, PODS, make_object, names, storage, upsert

pytestmark = pytest.mark.usefixtures("clean_tables")
PODS_FILTER = TypeFilter("", "v1", "pods")


@pytest.fixture
async def clean_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await ensure_schema(engine)
        async with engine.begin() as connection:
            await connection.execute(sa.delete(resources))
    finally:
        await engine.dispose()


async def test_schema_creation_is_idempotent(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert await ensure_schema(engine) == SCHEMA_VERSION
        assert await ensure_schema(engine) == SCHEMA_VERSION
    finally:
        await engine.dispose()


async def test_a_newer_schema_is_refused(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(schema_info.update().values(version=SCHEMA_VERSION + 1))
        with pytest.raises(SchemaTooNew, match="newer"):
            await ensure_schema(engine)
    finally:
        async with engine.begin() as connection:
            await connection.execute(schema_info.update().values(version=SCHEMA_VERSION))
        await engine.dispose()


async def test_batch_upserts_then_reads_back_resource_versions(database_url: str) -> None:
    async with storage(database_url) as (writer, _reader):
        batch = [upsert(make_object(PODS, name=f"p{i}", rv=str(10 + i))) for i in range(3)]
        batch.append(upsert(make_object(PODS, name="node-x", namespace="", rv="7")))
        await writer.apply(cluster="c1", rtype=PODS, changes=batch)
        assert await writer.resource_versions(cluster="c1", rtype=PODS) == {
            "default/p0": "10",
            "default/p1": "11",
            "default/p2": "12",
            "node-x": "7",
        }
        assert await writer.resource_versions(cluster="c2", rtype=PODS) == {}


async def test_a_wrong_new_hint_still_stores_the_batch(database_url: str) -> None:
    """Rows hinted new go straight in (PostgreSQL copies them without a conflict check); when
    one exists after all, the batch is written again as upserts: nothing fails or doubles."""
    async with storage(database_url) as (writer, reader):
        first = [upsert(make_object(PODS, name=f"h{i}", rv="1")) for i in range(3)]
        assert await writer.apply(cluster="c1", rtype=PODS, changes=first) == 3
        hinted = [
            upsert_from_object(make_object(PODS, name=f"h{i}", rv="2"), is_new=True)
            for i in range(4)
        ]
        assert await writer.apply(cluster="c1", rtype=PODS, changes=hinted) == 4
        assert await writer.resource_versions(cluster="c1", rtype=PODS) == {
            f"default/h{i}": "2" for i in range(4)
        }
        fresh = [
            upsert_from_object(make_object(PODS, name=f"n{i}", rv="1"), is_new=True)
            for i in range(3)
        ]
        assert await writer.apply(cluster="c1", rtype=PODS, changes=fresh) == 3
        page = await reader.list(Query(types=(PODS_FILTER,), clusters=("c1",)))
        assert sorted(names(page.items)) == ["h0", "h1", "h2", "h3", "n0", "n1", "n2"]


async def test_stored_bytes_are_served_unchanged(database_url: str) -> None:
    async with storage(database_url) as (writer, reader):
        obj = make_object(PODS, name="exact", labels={"app": "ünïcode"})
        change = upsert(obj)
        await writer.apply(cluster="c1", rtype=PODS, changes=[change])
        stored = await reader.get(
            cluster="c1", group="", version="v1", resource="pods", namespace="default", name="exact"
        )
        # Stored once, as served: the member's JSON with the global resourceVersion stamped in.
        assert stored is not None
        served_rv = orjson.loads(stored)["metadata"]["resourceVersion"]
        assert int(served_rv) > 0
        assert stored == stamp_resource_version(change.object, int(served_rv))
        assert orjson.loads(stored) == {
            **obj,
            "metadata": {**obj["metadata"], "resourceVersion": served_rv},
        }


async def test_same_resource_version_is_skipped_new_one_is_written(database_url: str) -> None:
    async with storage(database_url) as (writer, reader):
        await writer.apply(
            cluster="c1",
            rtype=PODS,
            changes=[upsert(make_object(PODS, name="p", rv="5", labels={"v": "a"}))],
        )
        # Same resourceVersion, different body: the stored row is left alone.
        await writer.apply(
            cluster="c1",
            rtype=PODS,
            changes=[upsert(make_object(PODS, name="p", rv="5", labels={"v": "b"}))],
        )
        got = await reader.get(
            cluster="c1", group="", version="v1", resource="pods", namespace="default", name="p"
        )
        assert got is not None and orjson.loads(got)["metadata"]["labels"] == {"v": "a"}
        await writer.apply(
            cluster="c1",
            rtype=PODS,
            changes=[upsert(make_object(PODS, name="p", rv="6", labels={"v": "c"}))],
        )
        got = await reader.get(
            cluster="c1", group="", version="v1", resource="pods", namespace="default", name="p"
        )
        assert got is not None and orjson.loads(got)["metadata"]["labels"] == {"v": "c"}


async def test_last_change_of_an_object_in_a_batch_wins(database_url: str) -> None:
    async with storage(database_url) as (writer, _reader):
        await writer.apply(
            cluster="c1",
            rtype=PODS,
            changes=[
                upsert(make_object(PODS, name="a", rv="1")),
                upsert(make_object(PODS, name="a", rv="2")),
                upsert(make_object(PODS, name="b", rv="1")),
                Delete(namespace="default", name="b"),
            ],
        )
        assert await writer.resource_versions(cluster="c1", rtype=PODS) == {"default/a": "2"}


async def test_deletes_remove_only_the_named_objects(database_url: str) -> None:
    async with storage(database_url) as (writer, _reader):
        await writer.apply(
            cluster="c1", rtype=PODS, changes=[upsert(make_object(PODS, name=n)) for n in "abc"]
        )
        await writer.apply(
            cluster="c2", rtype=PODS, changes=[upsert(make_object(PODS, name="a", cluster="c2"))]
        )
        await writer.apply(
            cluster="c1", rtype=PODS, changes=[Delete("default", "a"), Delete("default", "zz")]
        )
        assert sorted(await writer.resource_versions(cluster="c1", rtype=PODS)) == [
            "default/b",
            "default/c",
        ]
        assert list(await writer.resource_versions(cluster="c2", rtype=PODS)) == ["default/a"]


async def test_delete_a_cluster_or_one_of_its_resource_types(database_url: str) -> None:
    async with storage(database_url) as (writer, reader):
        for cluster in ("c1", "c2"):
            await writer.apply(
                cluster=cluster,
                rtype=PODS,
                changes=[upsert(make_object(PODS, name="p", cluster=cluster))],
            )
            await writer.apply(
                cluster=cluster,
                rtype=DEPLOYMENTS,
                changes=[upsert(make_object(DEPLOYMENTS, name="d", cluster=cluster))],
            )
        assert await writer.delete_cluster("c1", rtype=DEPLOYMENTS) == 1
        assert list(await writer.resource_versions(cluster="c1", rtype=PODS)) == ["default/p"]
        assert await writer.delete_cluster("c1") == 1
        assert await writer.resource_versions(cluster="c1", rtype=PODS) == {}
        page = await reader.list(Query())
        assert sorted(names(page.items)) == ["d", "p"]


async def test_a_batch_that_fails_midway_leaves_nothing_behind(database_url: str) -> None:
    async with storage(database_url) as (writer, _reader):
        await writer.apply(
            cluster="c1", rtype=PODS, changes=[upsert(make_object(PODS, name="keep", rv="1"))]
        )

        def fail_on_insert(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            if "INSERT INTO" in statement.upper():
                raise RuntimeError("injected failure after the delete ran")

        sync_engine = writer.engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", fail_on_insert)
        try:
            with pytest.raises(RuntimeError, match="injected"):
                await writer.apply(
                    cluster="c1",
                    rtype=PODS,
                    changes=[
                        Delete("default", "keep"),
                        upsert(make_object(PODS, name="new", rv="2")),
                    ],
                )
        finally:
            event.remove(sync_engine, "before_cursor_execute", fail_on_insert)
        assert await writer.resource_versions(cluster="c1", rtype=PODS) == {"default/keep": "1"}


async def test_transient_errors_are_retried_until_the_batch_lands(database_url: str) -> None:
    async with storage(database_url) as (writer, _reader):
        failures = []

        def flaky_insert(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            if "INSERT INTO" in statement.upper() and len(failures) < 2:
                failures.append(statement)
                raise sa.exc.OperationalError(
                    statement, parameters, Exception("database is locked")
                )

        sync_engine = writer.engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", flaky_insert)
        try:
            await writer.apply(
                cluster="c1", rtype=PODS, changes=[upsert(make_object(PODS, name="p"))]
            )
        finally:
            event.remove(sync_engine, "before_cursor_execute", flaky_insert)
        assert len(failures) == 2
        assert await writer.resource_versions(cluster="c1", rtype=PODS) == {"default/p": "1"}


async def test_errors_that_are_not_transient_surface_at_once(database_url: str) -> None:
    async with storage(database_url) as (writer, _reader):
        calls = []

        def broken(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            calls.append(statement)
            raise sa.exc.ProgrammingError(statement, parameters, Exception("syntax error"))

        sync_engine = writer.engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", broken)
        try:
            with pytest.raises(StorageFailed, match="syntax error") as failed:
                await writer.apply(cluster="c1", rtype=PODS, changes=[Delete("default", "x")])
            assert isinstance(failed.value.__cause__, sa.exc.ProgrammingError)
        finally:
            event.remove(sync_engine, "before_cursor_execute", broken)
        assert len(calls) == 1


async def test_label_searches_follow_label_changes_and_deletes(database_url: str) -> None:
    async with storage(database_url) as (writer, reader):

        async def matching(selector: str) -> list[str]:
            query = query_from_request({"labelSelector": [selector]}, types=(PODS_FILTER,))
            return names((await reader.list(query)).items)

        await writer.apply(
            cluster="c1",
            rtype=PODS,
            changes=[upsert(make_object(PODS, name="p", rv="1", labels={"a": "1"}))],
        )
        assert await matching("a=1") == ["p"]
        await writer.apply(
            cluster="c1",
            rtype=PODS,
            changes=[upsert(make_object(PODS, name="p", rv="2", labels={"a": "2"}))],
        )
        assert (await matching("a=1"), await matching("a in (2,3)")) == ([], ["p"])
        await writer.apply(cluster="c1", rtype=PODS, changes=[Delete("default", "p")])
        assert await matching("a=2") == []


async def test_reads_survive_the_server_closing_their_pooled_connections(
    database_url: str,
) -> None:
    """PostgreSQL reads skip the ping before each read: one whose pooled connection the server
    closed (a restart, an administrator) is read again on a new connection, not failed."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the threaded reads are PostgreSQL's")
    async with storage(database_url) as (writer, reader):
        await writer.apply(cluster="c1", rtype=PODS, changes=[upsert(make_object(PODS, name="a"))])
        query = Query(types=(PODS_FILTER,), clusters=("c1",))
        for _ in range(3):  # every pooled connection of the reader's threads in use once
            assert names((await reader.list(query)).items) == ["a"]
        async with writer.engine.connect() as connection:
            closed = await connection.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert closed.scalar_one() >= 1
        for _ in range(3):
            assert names((await reader.list(query)).items) == ["a"]
        got = await reader.get(
            cluster="c1", group="", version="v1", resource="pods", namespace="default", name="a"
        )
        assert got is not None


async def test_concurrent_batches_share_transactions_and_fail_alone(database_url: str) -> None:
    async with storage(database_url) as (writer, _reader):
        commits: list[object] = []
        sync_engine = writer.engine.sync_engine

        def commit(connection):  # type: ignore[no-untyped-def]
            commits.append(connection)

        def fail_bad_cluster(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            if "bad" in str(parameters):
                raise RuntimeError("injected failure of one cluster's batch")

        async def write(cluster: str) -> int:
            # Names of their own, and shared ones: no row may land under another cluster.
            names = [f"{cluster}-p", "shared-0", "shared-1"]
            objects = [make_object(PODS, name=n, cluster=cluster, rv="1") for n in names]
            return await writer.apply(
                cluster=cluster, rtype=PODS, changes=[upsert(o) for o in objects]
            )

        clusters = [f"group-{n}" for n in range(20)]
        event.listen(sync_engine, "commit", commit)
        try:
            assert await asyncio.gather(*(write(c) for c in clusters)) == [3] * 20
            together = len(commits)
            event.listen(sync_engine, "before_cursor_execute", fail_bad_cluster)
            try:
                outcomes = await asyncio.gather(
                    *(write(c) for c in ["late-0", "late-1", "bad", "late-2", "late-3"]),
                    return_exceptions=True,
                )
            finally:
                event.remove(sync_engine, "before_cursor_execute", fail_bad_cluster)
        finally:
            event.remove(sync_engine, "commit", commit)
        # Two groups start at once; the 18 batches that waited share a third commit.
        assert together == 3
        assert outcomes[:2] + outcomes[3:] == [3, 3, 3, 3]
        assert isinstance(outcomes[2], RuntimeError)
        for cluster in [*clusters, "late-0", "late-3"]:
            stored = await writer.resource_versions(cluster=cluster, rtype=PODS)
            expected = [f"{cluster}-p", "shared-0", "shared-1"]
            assert sorted(stored) == [f"default/{name}" for name in expected]
        assert await writer.resource_versions(cluster="bad", rtype=PODS) == {}
