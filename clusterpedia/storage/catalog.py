"""The catalog of synced resource types: what discovery serves, shared by every replica.

The syncing replica replaces a cluster's entries whenever its discovery is resolved; every
serving replica reads them (cached for a few seconds), so a replica whose operator is on
standby answers discovery exactly as the active one does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterpedia.gvr import ResourceType
from clusterpedia.storage.dialects.base import scope_of
from clusterpedia.storage.errors import database_errors
from clusterpedia.storage.schema import cluster_health, resource_types

T = resource_types.c
H = cluster_health.c


@dataclass(frozen=True, slots=True)
class PrinterColumn:
    """A custom resource's ``additionalPrinterColumns`` entry."""

    name: str
    type: str
    json_path: str
    description: str = ""
    format: str = ""
    priority: int = 0


@dataclass(frozen=True, slots=True)
class SyncedType:
    """One resource type one cluster syncs, as discovery describes it."""

    cluster: str
    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    printer_columns: tuple[PrinterColumn, ...] = field(default=())

    @property
    def rtype(self) -> ResourceType:
        return ResourceType(self.group, self.version, self.resource, self.kind)

    def _details(self) -> str:
        return orjson.dumps(
            {
                "shortNames": list(self.short_names),
                "categories": list(self.categories),
                "columns": [
                    {
                        "name": c.name,
                        "type": c.type,
                        "jsonPath": c.json_path,
                        "description": c.description,
                        "format": c.format,
                        "priority": c.priority,
                    }
                    for c in self.printer_columns
                ],
            }
        ).decode()


def _from_row(row: Any) -> SyncedType:
    details = orjson.loads(row.details)
    return SyncedType(
        cluster=row.cluster,
        group=row.group,
        version=row.version,
        resource=row.resource,
        kind=row.kind,
        namespaced=bool(row.namespaced),
        singular=row.singular,
        short_names=tuple(details.get("shortNames") or ()),
        categories=tuple(details.get("categories") or ()),
        printer_columns=tuple(
            PrinterColumn(
                name=c["name"],
                type=c["type"],
                json_path=c["jsonPath"],
                description=c.get("description", ""),
                format=c.get("format", ""),
                priority=int(c.get("priority", 0)),
            )
            for c in details.get("columns") or ()
        ),
    )


class TypeCatalog:
    """Reads and replaces the synced types of clusters."""

    def __init__(self, engine: AsyncEngine, *, cache_seconds: float = 2.0):
        self.engine = engine
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, list[SyncedType]] | None = None
        self._health: tuple[float, dict[str, tuple[bool, str]]] | None = None

    @database_errors("writing the type catalog")
    async def replace(self, cluster: str, types: Sequence[SyncedType]) -> None:
        """Make ``types`` the whole entry of ``cluster``."""
        async with self.engine.begin() as connection:
            await connection.execute(sa.delete(resource_types).where(T.cluster == cluster))
            if types:
                await connection.execute(
                    resource_types.insert(),
                    [
                        {
                            "cluster": cluster,
                            "group": t.group,
                            "version": t.version,
                            "resource": t.resource,
                            "kind": t.kind,
                            "namespaced": t.namespaced,
                            "singular": t.singular,
                            "details": t._details(),
                        }
                        for t in types
                    ],
                )
        self._cached = None

    @database_errors("forgetting a cluster's types")
    async def forget(self, cluster: str, *, rtype: ResourceType | None = None) -> None:
        """Drop ``cluster``'s types (or only ``rtype``); without ``rtype``, its health too."""
        async with self.engine.begin() as connection:
            await connection.execute(
                sa.delete(resource_types).where(*scope_of(resource_types, cluster, rtype))
            )
            if rtype is None:
                await connection.execute(sa.delete(cluster_health).where(H.cluster == cluster))
        self._cached = self._health = None

    @database_errors("recording cluster health")
    async def set_health(self, cluster: str, *, healthy: bool, reason: str) -> None:
        """Record ``cluster``'s health as its synchro sees it now."""
        async with self.engine.begin() as connection:
            await connection.execute(sa.delete(cluster_health).where(H.cluster == cluster))
            await connection.execute(
                cluster_health.insert(), {"cluster": cluster, "healthy": healthy, "reason": reason}
            )
        self._health = None

    @database_errors("reading cluster health")
    async def health(self) -> dict[str, tuple[bool, str]]:
        """cluster -> (healthy, reason), for clusters whose health was recorded."""
        cached = self._health
        if cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        async with self.engine.connect() as connection:
            rows = (await connection.execute(sa.select(cluster_health))).all()
        found = {row.cluster: (bool(row.healthy), row.reason) for row in rows}
        self._health = (time.monotonic(), found)
        return found

    @database_errors("reading the type catalog")
    async def all(self, *, fresh: bool = False) -> list[SyncedType]:
        """Every cluster's types, ordered by cluster, group, version, resource (read again
        when ``fresh``, else cached for ``cache_seconds``)."""
        cached = self._cached
        if not fresh and cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        statement = sa.select(resource_types).order_by(T.cluster, T.group, T.version, T.resource)
        async with self.engine.connect() as connection:
            types = [_from_row(row) for row in (await connection.execute(statement)).all()]
        self._cached = (time.monotonic(), types)
        return types

    async def clusters(self) -> list[str]:
        return sorted({t.cluster for t in await self.all()})
