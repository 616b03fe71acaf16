"""The storage side of a serving test: Pods written as a sync worker writes them, by a writer
on its own event loop in a thread, so a test's servers and clients read what it knows the
log holds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from clusterpedia.storage.catalog import SyncedType, TypeCatalog
from clusterpedia.storage.changelog import ChangeLog
from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.migrate import ensure_schema
from clusterpedia.storage.records import Delete
from clusterpedia.storage.writer import ResourceWriter
from clusterpedia.testing.informer import MEMBER_RV_ANNOTATION
from clusterpedia.testing.objects import PODS, make_object, upsert


class Store:
    """A migrated database whose ``clusters`` each sync Pods (and are healthy)."""

    def __init__(self, url: str, *, clusters: Sequence[str]):
        self.url = url
        self.clusters = tuple(clusters)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engine = self.run(self._engine())
        self.writer = ResourceWriter(self.engine)
        self.log = ChangeLog(self.engine)

    async def _engine(self) -> Any:
        engine = create_engine(self.url)
        await ensure_schema(engine)
        catalog = TypeCatalog(engine)
        for cluster in self.clusters:
            await catalog.replace(
                cluster, [SyncedType(cluster, "", "v1", "pods", "Pod", True, "pod", ("po",))]
            )
            await catalog.set_health(cluster, healthy=True, reason="")
        return engine

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def put(
        self, cluster: str, name: str, *, rv: int, namespace: str = "watch", **labels: str
    ) -> None:
        pod = make_object(PODS, name=name, namespace=namespace, cluster=cluster, rv=str(rv))
        pod["metadata"]["labels"] = {"app": "w", **labels}
        pod["metadata"]["annotations"][MEMBER_RV_ANNOTATION] = str(rv)  # as a worker marks it
        change = upsert(pod)
        self.run(self.writer.apply(cluster=cluster, rtype=PODS, changes=[change]))

    def delete(self, cluster: str, name: str, namespace: str = "watch") -> None:
        self.run(self.writer.apply(cluster=cluster, rtype=PODS, changes=[Delete(namespace, name)]))

    def head(self) -> int:
        return int(self.run(self.log.marks()).head)

    def logged_pod_rvs(self, *, after: int, upto: int, namespace: str) -> list[int]:
        events = self.run(self.log.read(after=after, upto=upto, limit=10**6, resource="pods"))
        return [e.rv for e in events if e.namespace == namespace]

    def close(self) -> None:
        self.run(self.engine.dispose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
