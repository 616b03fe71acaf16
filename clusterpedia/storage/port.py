"""The storage port: everything the API server, the watch feed and sync may ask of storage.

Modelled on k8s.io/apiserver's ``storage.Interface`` under the generic registry: callers hold
these Protocols (``clusterpedia.storage`` exports them), never an engine, a connection or a
driver's exception. Every method raises :class:`~clusterpedia.storage.errors.StorageError`
when the database fails, :class:`~clusterpedia.storage.errors.InvalidQuery` for a query that
cannot be run; nothing else from below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from clusterpedia.gvr import ResourceType
from clusterpedia.storage.catalog import SyncedType
from clusterpedia.storage.changelog import ChangeEvent, Marks
from clusterpedia.storage.query import Page, Query
from clusterpedia.storage.records import Change


class ObjectReads(Protocol):
    """Stored objects, served as the bytes stored."""

    async def head(self) -> int:
        """The newest global resourceVersion."""
        ...

    async def list(self, query: Query) -> Page: ...

    def stream(self, query: Query) -> AsyncIterator[bytes]:
        """Every matching object, in order, without a page limit."""
        ...

    async def get(
        self, *, cluster: str, group: str, version: str, resource: str, namespace: str, name: str
    ) -> bytes | None: ...


class ObjectWrites(Protocol):
    """What a sync worker stores and asks when it resumes."""

    async def apply(self, *, cluster: str, rtype: ResourceType, changes: Sequence[Change]) -> int:
        """Apply ``changes`` atomically, logging each real change; return how many."""
        ...

    async def resource_versions(self, *, cluster: str, rtype: ResourceType) -> dict[str, str]: ...

    async def delete_cluster(self, cluster: str, *, rtype: ResourceType | None = None) -> int: ...


class Catalog(Protocol):
    """The synced types and health of every cluster, shared by every replica."""

    async def replace(self, cluster: str, types: Sequence[SyncedType]) -> None: ...

    async def set_health(self, cluster: str, *, healthy: bool, reason: str) -> None: ...

    async def health(self) -> dict[str, tuple[bool, str]]: ...

    async def all(self, *, fresh: bool = False) -> list[SyncedType]:
        """Every cluster's types (``fresh``: not from a cache, for a cluster just synced)."""
        ...

    async def clusters(self) -> list[str]: ...

    async def forget(self, cluster: str, *, rtype: ResourceType | None = None) -> None:
        """Drop ``cluster``'s entry (or one type of it); the whole cluster's health too."""
        ...


class Changes(Protocol):
    """The change log: dense global resourceVersions, read in order, announced, pruned.
    (Appending is the writer's: a change is logged in the transaction that stores it.)"""

    @property
    def pushes(self) -> bool:
        """Whether :meth:`notifications` announces commits; otherwise readers poll."""
        ...

    def notifications(self) -> AsyncIterator[int | None]: ...

    async def marks(self) -> Marks: ...

    async def read(
        self,
        *,
        after: int,
        upto: int | None = None,
        limit: int = 500,
        group: str | None = None,
        version: str | None = None,
        resource: str | None = None,
        cluster: str | None = None,
        objects: bool = True,
    ) -> list[ChangeEvent]: ...

    async def load(self, events: list[ChangeEvent]) -> list[ChangeEvent]: ...

    async def logged_after(self, rv: int) -> datetime | None: ...

    async def prune(self, *, max_age: timedelta | None, max_events: int | None) -> int: ...


class Storage(Protocol):
    """One database behind the port."""

    @property
    def objects(self) -> ObjectReads: ...

    @property
    def writes(self) -> ObjectWrites: ...

    @property
    def catalog(self) -> Catalog: ...

    @property
    def changes(self) -> Changes: ...

    async def migrate(self) -> int:
        """Bring the schema up to date; return the version found."""
        ...

    async def ping(self) -> None:
        """Raise StorageError unless the database answers."""
        ...

    async def close(self) -> None: ...
