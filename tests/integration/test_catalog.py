"""The catalog of synced types on SQLite, PostgreSQL and MariaDB: what discovery reads."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from clusterpedia.storage.catalog import PrinterColumn, SyncedType, TypeCatalog
from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.migrate import ensure_schema
from clusterpedia.storage.schema import SCHEMA_VERSION, resource_types, schema_info
from clusterpedia.storage.writer import ResourceWriter
from clusterpedia.testing.objects import PODS, make_object, upsert

POD_TYPE = SyncedType("c1", "", "v1", "pods", "Pod", True, "pod", ("po",), ("all",))
WIDGETS = SyncedType(
    "c1",
    "example.io",
    "v1",
    "widgets",
    "Widget",
    True,
    "widget",
    printer_columns=(
        PrinterColumn(
            "Ready", "string", '.status.conditions[?(@.type=="Ready")].status', "ok?", "", 1
        ),
    ),
)


@pytest.fixture
async def catalog(database_url: str) -> AsyncIterator[TypeCatalog]:
    engine = create_engine(database_url)
    await ensure_schema(engine)
    async with engine.begin() as connection:
        await connection.execute(sa.delete(resource_types))
    yield TypeCatalog(engine, cache_seconds=0)
    await engine.dispose()


async def test_replace_round_trips_every_field(catalog: TypeCatalog) -> None:
    await catalog.replace("c1", [POD_TYPE, WIDGETS])
    await catalog.replace("c2", [SyncedType("c2", "", "v1", "pods", "Pod", True)])
    found = await catalog.all()
    assert found[:2] == [POD_TYPE, WIDGETS]
    assert await catalog.clusters() == ["c1", "c2"]
    await catalog.replace("c1", [WIDGETS])
    assert [t.resource for t in await catalog.all() if t.cluster == "c1"] == ["widgets"]


async def test_forgetting_a_cluster_or_a_type_removes_its_entry(
    catalog: TypeCatalog, database_url: str
) -> None:
    """The catalog forgets a type or a cluster (its health with it); the objects are the
    writer's, which leaves the catalog alone."""
    await catalog.replace("c1", [POD_TYPE, WIDGETS])
    await catalog.set_health("c1", healthy=True, reason="")
    writer = ResourceWriter(catalog.engine)
    await writer.apply(
        cluster="c1", rtype=PODS, changes=[upsert(make_object(PODS, name="p", cluster="c1"))]
    )
    assert await writer.delete_cluster("c1") == 1
    assert len(await catalog.all()) == 2
    await catalog.forget("c1", rtype=WIDGETS.rtype)
    assert [t.resource for t in await catalog.all()] == ["pods"]
    assert "c1" in await catalog.health()
    await catalog.forget("c1")
    assert await catalog.all() == [] and "c1" not in await catalog.health()


async def test_a_version_1_database_is_upgraded(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await ensure_schema(engine)
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: resource_types.drop(sync))
            await connection.execute(schema_info.update().values(version=1))
        assert await ensure_schema(engine) == 1
        assert await ensure_schema(engine) == SCHEMA_VERSION
        await TypeCatalog(engine).replace("c1", [POD_TYPE])
    finally:
        await engine.dispose()
