"""Kubernetes-shaped test objects and a ready storage, shared by tests and benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.migrate import ensure_schema
from clusterpedia.storage.query import Item
from clusterpedia.storage.reader import ResourceReader
from clusterpedia.storage.records import ResourceType, Upsert, upsert_from_object
from clusterpedia.storage.writer import ResourceWriter

PODS = ResourceType(group="", version="v1", resource="pods", kind="Pod")
DEPLOYMENTS = ResourceType(group="apps", version="v1", resource="deployments", kind="Deployment")
REPLICASETS = ResourceType(group="apps", version="v1", resource="replicasets", kind="ReplicaSet")


def make_object(
    rtype: ResourceType,
    *,
    name: str,
    namespace: str = "default",
    cluster: str = "c1",
    rv: str = "1",
    uid: str | None = None,
    labels: dict[str, str] | None = None,
    owner: str | None = None,
    created: str = "2024-03-01T10:00:00Z",
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"{cluster}-{namespace}-{name}",
        "resourceVersion": rv,
        "creationTimestamp": created,
        "annotations": {"shadow.clusterpedia.io/cluster-name": cluster},
    }
    if labels:
        metadata["labels"] = labels
    if owner:
        metadata["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "X", "name": "o", "uid": owner, "controller": True}
        ]
    obj: dict[str, Any] = {
        "apiVersion": rtype.api_version,
        "kind": rtype.kind,
        "metadata": metadata,
    }
    if spec is not None:
        obj["spec"] = spec
    if status is not None:
        obj["status"] = status
    return obj


def upsert(obj: dict[str, Any]) -> Upsert:
    return upsert_from_object(obj)


def names(items: list[Item]) -> list[str]:
    """The object names of a page's items, in order."""
    return [orjson.loads(item.data)["metadata"]["name"] for item in items]


@asynccontextmanager
async def storage(
    url: str, *, allow_where_sql: bool = False
) -> AsyncIterator[tuple[ResourceWriter, ResourceReader]]:
    """A migrated database behind a writer and a reader; the engine is disposed afterwards."""
    engine = create_engine(url)
    try:
        await ensure_schema(engine)
        yield ResourceWriter(engine), ResourceReader(engine, allow_where_sql=allow_where_sql)
    finally:
        await engine.dispose()
