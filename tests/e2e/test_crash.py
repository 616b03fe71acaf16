"""Crash safety, on every database: ``kill -9`` of ``clusterpedia run`` in the middle of a large
initial sync and again during steady churn. After each restart the database converges to
exactly the member's state (every object's member resourceVersion), with no duplicates and no
lost deletes; the change log has no gaps, and replaying it gives the stored state."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
import yaml

from clusterpedia.kube.access import access_from_kubeconfig
from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.storage.changelog import ChangeLog
from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.schema import change_log, resources
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.informer import MEMBER_RV_ANNOTATION
from clusterpedia.testing.objects import pediacluster
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually

COUNT = 4000


@pytest.fixture(scope="module")
def dialect(database_url: str) -> str:
    return database_url.split(":")[0].split("+")[0].replace("postgresql", "pg")


@pytest.fixture(scope="module")
def member(member_clusters: list[APIServer], dialect: str) -> Iterator[APIServer]:
    member = member_clusters[0]
    namespace = f"crash-{dialect}"
    asyncio.run(_seed(member, namespace, COUNT))
    yield member
    member.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


async def _seed(member: APIServer, namespace: str, count: int) -> None:
    async with KubeClient(access_from_kubeconfig(member.kubeconfig.read_bytes())) as kube:
        await kube.post("/api/v1/namespaces", {"metadata": {"name": namespace}})
        names = iter(range(count))

        async def worker() -> None:
            for index in names:
                await kube.post(
                    f"/api/v1/namespaces/{namespace}/configmaps",
                    {"metadata": {"name": f"cm-{index:05d}"}, "data": {"v": "0" * 500}},
                )

        await asyncio.gather(*(worker() for _ in range(16)))


def member_state(member: APIServer, namespace: str) -> dict[str, int]:
    listed = orjson.loads(
        member.kubectl("get", "configmaps", "-n", namespace, "-o", "json", timeout=120).stdout
    )
    return {i["metadata"]["name"]: int(i["metadata"]["resourceVersion"]) for i in listed["items"]}


async def _stored(url: str, cluster: str) -> tuple[dict[str, int], int]:
    """name -> member resourceVersion as stored, and the number of rows."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    sa.select(resources.c.name, resources.c.resource_version).where(
                        resources.c.cluster == cluster, resources.c.resource == "configmaps"
                    )
                )
            ).all()
        return {name: int(rv) for name, rv in rows}, len(rows)
    finally:
        await engine.dispose()


async def _log(url: str, cluster: str) -> tuple[list[int], int, int, dict[str, int]]:
    """Every rv in the log, the marks, and the state the cluster's events replay to."""
    engine = create_engine(url)
    try:
        log = ChangeLog(engine)
        marks = await log.marks()
        async with engine.connect() as connection:
            rvs = [
                rv
                for (rv,) in await connection.execute(
                    sa.select(change_log.c.rv).order_by(change_log.c.rv)
                )
            ]
        replayed: dict[str, int] = {}
        for event in await log.read(after=0, limit=10**7, cluster=cluster):
            if event.type == "DELETED":
                replayed.pop(event.name, None)
            else:
                annotations = event.parsed["metadata"]["annotations"]
                replayed[event.name] = int(annotations[MEMBER_RV_ANNOTATION])
        return rvs, marks.head, marks.pruned, replayed
    finally:
        await engine.dispose()


def converged(url: str, cluster: str, member: APIServer, namespace: str) -> bool:
    stored, _ = asyncio.run(_stored(url, cluster))
    return stored == member_state(member, namespace)


class Churn:
    """Updates, deletes and re-creates the member's ConfigMaps until stopped."""

    def __init__(self, member: APIServer, namespace: str):
        self.member, self.namespace = member, namespace
        self.changes = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        generator = random.Random(3)
        base = f"/api/v1/namespaces/{self.namespace}/configmaps"
        async with KubeClient(access_from_kubeconfig(self.member.kubeconfig.read_bytes())) as kube:
            while not self.stopped.is_set():
                name = f"cm-{generator.randrange(200):05d}"
                try:
                    if generator.random() < 0.3:
                        await kube.delete(f"{base}/{name}")
                    else:
                        try:
                            await kube.patch(f"{base}/{name}", {"data": {"n": str(self.changes)}})
                        except KubeError:
                            await kube.post(base, {"metadata": {"name": name}, "data": {"n": "0"}})
                    self.changes += 1
                except KubeError:
                    pass  # deleted twice, or re-created meanwhile: the next change goes on
                await asyncio.sleep(0.02)

    def __enter__(self) -> Churn:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stopped.set()
        self.thread.join(30)


def test_kill_9_during_initial_sync_and_churn_loses_nothing(
    host: APIServer, member: APIServer, database_url: str, dialect: str, tmp_path: Path
) -> None:
    namespace, cluster = f"crash-{dialect}", f"crash-{dialect}"
    product = ProductProcess(
        workdir=tmp_path, kubeconfig=host.kubeconfig, storage_url=database_url
    ).start()
    spec = pediacluster(
        cluster,
        member.kubeconfig.read_bytes(),
        {
            "group": "",
            "resources": ["configmaps"],
            "fieldSelector": f"metadata.namespace={namespace}",
        },
    )
    try:
        host.kubectl("apply", "-f", "-", input=yaml.safe_dump(spec))
        # Kill once some pages are stored and others are not.
        deadline = time.monotonic() + 120
        while (rows := asyncio.run(_stored(database_url, cluster))[1]) < 500:
            assert time.monotonic() < deadline, "the initial sync did not start"
            time.sleep(0.02)
        product.kill()
        assert rows < COUNT, f"the initial sync finished ({rows} rows) before the kill"
        product.start()
        eventually(
            lambda: converged(database_url, cluster, member, namespace),
            timeout=120,
            what="the initial sync converges after kill -9",
        )

        with Churn(member, namespace) as churn:
            time.sleep(3)
            product.kill()  # mid-churn: batches in flight are lost with the process
            product.start()
            time.sleep(3)
        assert churn.changes > 50
        eventually(
            lambda: converged(database_url, cluster, member, namespace),
            timeout=120,
            what="the database converges after kill -9 during churn",
        )
        stored, rows = asyncio.run(_stored(database_url, cluster))
        assert rows == len(stored), "no duplicate rows"
        rvs, head, pruned, replayed = asyncio.run(_log(database_url, cluster))
        assert rvs == list(range(pruned + 1, head + 1)), "the change log has no gaps"
        assert pruned == 0 and replayed == stored, "replaying the log gives the stored state"
    finally:
        host.kubectl("delete", "pediacluster", cluster, "--timeout=60s", check=False)
        product.stop()
