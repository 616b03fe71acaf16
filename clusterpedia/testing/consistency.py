"""Comparing what the product stored with what a member holds, and churning a member: the
checks behind the crash and fault tests."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import orjson
import sqlalchemy as sa

from clusterpedia.kube.access import access_from_kubeconfig
from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.storage.changelog import ChangeLog
from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.schema import change_log, resources
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.informer import MEMBER_RV_ANNOTATION


async def seed_configmaps(member: APIServer, namespace: str, count: int) -> None:
    """``count`` ConfigMaps of ~500 bytes in a new ``namespace``, 16 requests at a time."""
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


async def stored_state(
    url: str, cluster: str, namespace: str | None = None
) -> tuple[dict[str, int], int]:
    """name -> member resourceVersion as stored (of one namespace, if given), and the number
    of rows."""
    engine = create_engine(url)
    query = sa.select(resources.c.name, resources.c.resource_version).where(
        resources.c.cluster == cluster, resources.c.resource == "configmaps"
    )
    if namespace is not None:
        query = query.where(resources.c.namespace == namespace)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return {name: int(rv) for name, rv in rows}, len(rows)
    finally:
        await engine.dispose()


async def change_log_report(url: str, cluster: str) -> tuple[list[int], int, int, dict[str, int]]:
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
    stored, _ = asyncio.run(stored_state(url, cluster))
    return stored == member_state(member, namespace)


class ConfigMapChurn:
    """Updates, deletes and re-creates ConfigMaps ``cm-00000`` .. of ``namespace`` in the
    members, ``rate`` changes a second in all, until stopped. Changes start on a fixed schedule
    (up to 64 in flight), so the rate holds whatever one request takes."""

    def __init__(
        self, members: list[APIServer], namespace: str, *, names: int = 200, rate: float = 50
    ):
        self.members, self.namespace = members, namespace
        self.names, self.rate = names, rate
        self.changes = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        generator = random.Random(3)
        clients = [
            KubeClient(access_from_kubeconfig(member.kubeconfig.read_bytes()))
            for member in self.members
        ]
        in_flight = asyncio.Semaphore(64)
        pending: set[asyncio.Task[None]] = set()
        started, scheduled = time.monotonic(), 0
        try:
            while not self.stopped.is_set():
                await asyncio.sleep(max(0.0, started + scheduled / self.rate - time.monotonic()))
                await in_flight.acquire()
                name = f"cm-{generator.randrange(self.names):05d}"
                change = self._change(
                    generator.choice(clients), name, generator.random() < 0.3, in_flight
                )
                task = asyncio.create_task(change)
                pending.add(task)
                task.add_done_callback(pending.discard)
                scheduled += 1
            await asyncio.gather(*pending)
        finally:
            for kube in clients:
                await kube.close()

    async def _change(
        self, kube: KubeClient, name: str, delete: bool, in_flight: asyncio.Semaphore
    ) -> None:
        base = f"/api/v1/namespaces/{self.namespace}/configmaps"
        try:
            if delete:
                await kube.delete(f"{base}/{name}")
            else:
                try:
                    await kube.patch(f"{base}/{name}", {"data": {"n": str(self.changes)}})
                except KubeError:
                    await kube.post(base, {"metadata": {"name": name}, "data": {"n": "0"}})
            self.changes += 1
        except KubeError:
            pass  # deleted twice, or re-created meanwhile: the next change goes on
        finally:
            in_flight.release()

    def __enter__(self) -> ConfigMapChurn:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stopped.set()
        self.thread.join(30)
