"""Kubernetes Leases, the only state the replicas share to divide the clusters among them.

Every change is optimistic: a renewal or a take-over names the resourceVersion it read, so
of two replicas racing for one Lease exactly one wins (the other gets 409 and reads again).

Expiry is judged the way client-go's leader election judges it: by how long *this* replica
has seen a Lease's record unchanged, on its own monotonic clock, never by comparing the
record's ``renewTime`` with the local wall clock. A replica whose clock is off by minutes
therefore neither takes a live holder's Lease nor keeps its own past its time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from clusterpedia.kube.client import KubeClient, KubeError

API = "/apis/coordination.k8s.io/v1"


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str  # "" when nobody holds it
    duration: float  # seconds
    resource_version: str
    transitions: int = 0


def _micro_time() -> str:
    """Kubernetes' MicroTime: RFC 3339 with microseconds, UTC (for people reading it only)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(obj: Mapping[str, Any]) -> Lease:
    spec = obj.get("spec") or {}
    return Lease(
        name=obj["metadata"]["name"],
        holder=str(spec.get("holderIdentity") or ""),
        duration=float(spec.get("leaseDurationSeconds") or 0),
        resource_version=str(obj["metadata"].get("resourceVersion") or ""),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


class LeaseStore:
    """The Leases of one namespace, labelled ``label``; :class:`KubeError` on failures
    other than losing a race (those return None or False)."""

    def __init__(self, host: KubeClient, namespace: str, *, label: str):
        self.host = host
        self.namespace = namespace
        self.label = label

    def _path(self, name: str = "") -> str:
        base = f"{API}/namespaces/{quote(self.namespace, safe='')}/leases"
        return f"{base}/{quote(name, safe='')}" if name else base

    async def list(self, value: str) -> list[Lease]:
        """The Leases whose label has ``value``."""
        found = await self.host.get(self._path(), params={"labelSelector": f"{self.label}={value}"})
        return [_parse(item) for item in found.get("items") or []]

    async def create(self, name: str, *, holder: str, duration: float, value: str) -> Lease | None:
        """A new Lease held by ``holder``; None if one of that name exists already."""
        now = _micro_time()
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "labels": {self.label: value}},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": round(duration),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            return _parse(await self.host.post(self._path(), body))
        except KubeError as error:
            if error.status == 409:
                return None
            raise

    async def renew(self, lease: Lease, *, holder: str) -> Lease | None:
        """``lease`` renewed by ``holder`` (taken over when another held it); None if it
        changed since it was read (someone else renewed, took or released it)."""
        now = _micro_time()
        spec: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": round(lease.duration),
            "renewTime": now,
        }
        if lease.holder != holder:
            spec.update(acquireTime=now, leaseTransitions=lease.transitions + 1)
        patch = {"metadata": {"resourceVersion": lease.resource_version}, "spec": spec}
        try:
            return _parse(await self.host.patch(self._path(lease.name), patch))
        except KubeError as error:
            if error.status in (404, 409):
                return None
            raise

    async def delete(self, lease: Lease) -> bool:
        """Release by deleting, unless it changed since it was read; whether it went."""
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"resourceVersion": lease.resource_version},
        }
        try:
            await self.host.delete(self._path(lease.name), options)
        except KubeError as error:
            if error.status in (404, 409):
                return False
            raise
        return True


class Observer:
    """When this replica first saw each Lease's current record (its own monotonic clock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._seen: dict[str, tuple[str, float]] = {}

    def see(self, leases: list[Lease]) -> None:
        """Record a listing of the Leases (those not in it are forgotten)."""
        now = self.clock()
        seen: dict[str, tuple[str, float]] = {}
        for lease in leases:
            previous = self._seen.get(lease.name)
            unchanged = previous is not None and previous[0] == lease.resource_version
            seen[lease.name] = previous if unchanged and previous else (lease.resource_version, now)
        self._seen = seen

    def expired(self, lease: Lease) -> bool:
        """Whether ``lease`` went unrenewed for its whole duration while we watched; a
        record first seen now counts as fresh (its holder may have just renewed it)."""
        seen = self._seen.get(lease.name)
        if seen is None or seen[0] != lease.resource_version:
            return False
        return self.clock() - seen[1] > lease.duration
