"""Automatic sharding: the live replicas of one shard divide its clusters among themselves.

Each replica keeps a membership Lease (``clusterpedia-replica-<identity>``) and sees the live
set from everyone's; each cluster's owner is chosen by rendezvous hashing with bounded loads
over that set (``assignment``), so shares differ by at most one cluster and a replica joining
or leaving moves few clusters. Owning is not enough
to sync: a replica syncs a cluster only while it holds the cluster's own Lease
(``clusterpedia-sync-<cluster>``), taken when free (absent, or unrenewed for its whole
duration as we watched it) and renewed every ``interval``.

Fencing: a holder that has not renewed for ``fence_after`` (half the Lease's duration) stops
the cluster's sync, well before any other replica can see the Lease unrenewed for its whole
duration, so two replicas never sync one cluster at once, through a partition or clock skew
(``leases.py`` says why skew cannot matter). When renewal works again and nobody took the
Lease meanwhile, the sync resumes. A cluster that moves on a membership change is stopped
first, then its Lease deleted, and the new owner takes it at its next tick.

Failover after a ``kill -9``: the dead replica's Leases go unrenewed for ``duration``
seconds on the others' clocks; the new owner then takes each at its next tick and starts the
sync: at most ``duration + interval`` seconds, plus the start of the sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from clusterpedia.kube.client import KubeError
from clusterpedia.sharding.leases import Lease, LeaseStore, Observer

logger = logging.getLogger(__name__)
MEMBER_PREFIX = "clusterpedia-replica-"
SYNC_PREFIX = "clusterpedia-sync-"

REPLICAS = Gauge(
    "clusterpedia_sharding_replicas", "Live replicas of this replica's shard, as it sees them."
)
CLUSTERS_HELD = Gauge(
    "clusterpedia_sharding_clusters_synced", "Clusters whose sync Lease this replica holds."
)
MOVES = Counter(
    "clusterpedia_sharding_moves_total",
    "Clusters this replica took or gave up, by why.",
    ["why"],  # acquired, handed_over, fenced, lost, resumed
)


def _score(replica: str, cluster: str) -> bytes:
    return hashlib.sha256(f"{replica}\0{cluster}".encode()).digest()


def assignment(clusters: Iterable[str], replicas: Iterable[str]) -> dict[str, str]:
    """Which replica should sync each cluster: rendezvous hashing with bounded loads. In
    name order, each cluster goes to its highest-scoring replica that has fewer than
    ceil(clusters / replicas); every replica computes the same from the same sets.

    Plain rendezvous hashing leaves shares uneven for a few dozen clusters (12 over three
    replicas came out 8/4/0); the bound makes them differ by at most one, and a join or
    leave still moves close to the minimum (tests/unit/test_sharding_coordinator.py)."""
    names, members = sorted(set(clusters)), sorted(set(replicas))
    if not members:
        return {}
    capacity = math.ceil(len(names) / len(members))
    load = dict.fromkeys(members, 0)
    owners: dict[str, str] = {}
    for cluster in names:
        for replica in sorted(members, key=lambda r: _score(r, cluster), reverse=True):
            if load[replica] < capacity:
                owners[cluster] = replica
                load[replica] += 1
                break
    return owners


def lease_name(prefix: str, name: str) -> str:
    """A Lease name for ``name``: itself when it fits, else a readable head and a hash."""
    candidate = prefix + name
    if len(candidate) <= 253:
        return candidate
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{candidate[: 253 - 17]}-{digest}"


def replica_identity(hostname: str, suffix: str) -> str:
    """A DNS-subdomain identity: the pod's name and a per-process suffix, so a restarted
    process never mistakes its predecessor's Leases for its own."""
    base = re.sub(r"[^a-z0-9.-]+", "-", hostname.lower()).strip("-.") or "replica"
    return f"{base[:200]}-{suffix}"


@dataclass
class Held:
    lease: Lease
    renewed_at: float  # when the last successful renewal was sent (monotonic)
    syncing: bool = False


class ShardCoordinator:
    """Runs in the operator's event loop; ``start``/``stop`` begin and end a cluster's sync."""

    def __init__(
        self,
        *,
        members: LeaseStore,
        syncs: LeaseStore,
        identity: str,
        shard: str,
        duration: float,
        start: Callable[[str], Awaitable[None]],
        stop: Callable[[str], Awaitable[None]],
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.members = members
        self.syncs = syncs
        self.identity = identity
        self.shard = shard  # the label value of this shard's Leases ("" = the default shard)
        self.duration = duration
        self.interval = interval if interval is not None else max(0.5, duration / 5)
        self.fence_after = duration / 2
        self._start, self._stop = start, stop
        self.clock = clock
        self.replicas: list[str] = [identity]
        self.clusters: set[str] = set()  # the shard's clusters, as the operator reports them
        self.held: dict[str, Held] = {}
        self._membership: Lease | None = None
        self._member_observer = Observer(clock)
        self._sync_observer = Observer(clock)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._sync_leases: dict[str, Lease] = {}  # the last round's listing

    # The operator's side.

    def syncs_here(self, cluster: str) -> bool:
        held = self.held.get(cluster)
        return held is not None and held.syncing

    def synced_elsewhere(self, cluster: str) -> str:
        """The other replica that held ``cluster``'s Lease at the last round, unless it ran
        out meanwhile ("" when none)."""
        lease = self._sync_leases.get(lease_name(SYNC_PREFIX, cluster))
        if lease is None or lease.holder in ("", self.identity):
            return ""
        return "" if self._sync_observer.expired(lease) else lease.holder

    def add(self, cluster: str) -> None:
        if cluster not in self.clusters:
            self.clusters.add(cluster)
            self._wake.set()

    async def forget(self, cluster: str) -> None:
        """The cluster left the shard (or is being deleted): stop it and free its Lease."""
        self.clusters.discard(cluster)
        async with self._lock:
            if cluster in self.held:
                try:
                    await self._hand_over(cluster, why="handed_over")
                except KubeError as error:  # stopped already; the Lease just runs out
                    logger.warning("sharding: cannot delete cluster %s's Lease: %s", cluster, error)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="shard coordinator")

    async def close(self) -> None:
        """Stop every sync here and free their Leases and our membership: the others take
        over at their next tick instead of after the Leases' duration."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        async with self._lock:
            for cluster in list(self.held):
                with contextlib.suppress(KubeError):
                    await self._hand_over(cluster, why="handed_over")
            if self._membership is not None:
                with contextlib.suppress(KubeError):
                    await self.members.delete(self._membership)

    # The loop.

    async def _run(self) -> None:
        watchdog = asyncio.create_task(self._watchdog(), name="shard fencing")
        try:
            while True:
                try:
                    async with self._lock:
                        await asyncio.wait_for(self.tick(), timeout=self.interval * 2)
                    if self._failing:
                        logger.info("sharding: the host answers again")
                    self._failing = False
                except (KubeError, TimeoutError) as error:
                    if not self._failing:
                        logger.warning("sharding: cannot reach the host's Leases: %r", error)
                    self._failing = True
                except Exception:  # a bug: the loop must go on, or every cluster stops here
                    logger.exception("sharding: a round failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _watchdog(self) -> None:
        """Fencing on its own clock: a round stuck on an unanswered request must not delay
        it (it takes no lock; stopping a sync twice is harmless)."""
        while True:
            await self._fence()
            await asyncio.sleep(min(0.5, self.interval))

    async def tick(self) -> None:
        """One round: renew our membership, see who is live, then keep, give up or take
        each cluster. Raises KubeError when the host cannot be read."""
        await self._renew_membership()
        members = await self.members.list(self.shard)
        self._member_observer.see(members)
        live = {self.identity}
        for lease in members:
            if lease.holder and not self._member_observer.expired(lease):
                live.add(lease.holder)
        if sorted(live) != self.replicas:
            logger.info("sharding: live replicas of this shard: %s", ", ".join(sorted(live)))
        self.replicas = sorted(live)
        REPLICAS.set(len(live))
        leases = {lease.name: lease for lease in await self.syncs.list(self.shard)}
        self._sync_observer.see(list(leases.values()))
        self._sync_leases = leases
        mine = {c for c, r in assignment(self.clusters, live).items() if r == self.identity}
        # Renewals at once: with many clusters, one after another could outlast the fence.
        kept = [cluster for cluster in self.held if cluster in mine]
        for cluster, result in zip(
            kept,
            await asyncio.gather(*(self._renew(c) for c in kept), return_exceptions=True),
            strict=True,
        ):
            if isinstance(result, KubeError):
                logger.debug("sharding: renewing cluster %s failed: %s", cluster, result)
            elif isinstance(result, BaseException):
                raise result
        for cluster in [c for c in self.held if c not in mine]:
            await self._hand_over(cluster, why="handed_over")
        for cluster in sorted(mine - set(self.held)):
            await self._acquire(cluster, leases.get(lease_name(SYNC_PREFIX, cluster)))
        CLUSTERS_HELD.set(sum(held.syncing for held in self.held.values()))

    async def _renew_membership(self) -> None:
        name = lease_name(MEMBER_PREFIX, self.identity)
        renewed = None
        if self._membership is not None:
            renewed = await self.members.renew(self._membership, holder=self.identity)
        if renewed is None:  # first round, or it was deleted or changed under us
            renewed = await self.members.create(
                name, holder=self.identity, duration=self.duration, value=self.shard
            )
        if renewed is None:
            found = [lease for lease in await self.members.list(self.shard) if lease.name == name]
            renewed = await self.members.renew(found[0], holder=self.identity) if found else None
        self._membership = renewed

    async def _acquire(self, cluster: str, current: Lease | None) -> None:
        sent = self.clock()
        name = lease_name(SYNC_PREFIX, cluster)
        if current is None:
            lease = await self.syncs.create(
                name, holder=self.identity, duration=self.duration, value=self.shard
            )
        elif (
            not current.holder
            or current.holder == self.identity  # ours from a hand-over whose delete failed
            or self._sync_observer.expired(current)
        ):
            lease = await self.syncs.renew(current, holder=self.identity)
        else:
            return  # a live holder: it hands over, or its Lease runs out while we watch
        if lease is None:
            return  # another replica was quicker; the next round sees who
        previous = f" from {current.holder}" if current and current.holder else ""
        logger.info("sharding: took cluster %s%s", cluster, previous)
        MOVES.labels("acquired").inc()
        held = self.held[cluster] = Held(lease, renewed_at=sent)
        await self._begin(cluster, held)

    async def _renew(self, cluster: str) -> None:
        held = self.held[cluster]
        sent = self.clock()
        lease = await self.syncs.renew(held.lease, holder=self.identity)
        if lease is None:
            logger.warning("sharding: lost cluster %s: its Lease changed under us", cluster)
            MOVES.labels("lost").inc()
            await self._end(cluster, held)
            del self.held[cluster]
            return
        held.lease, held.renewed_at = lease, sent
        if not held.syncing:  # fenced earlier, and nobody took it meanwhile
            logger.info("sharding: renewed cluster %s again; resuming its sync", cluster)
            MOVES.labels("resumed").inc()
            await self._begin(cluster, held)

    async def _hand_over(self, cluster: str, *, why: str) -> None:
        held = self.held.pop(cluster)
        await self._end(cluster, held)
        logger.info("sharding: gave up cluster %s (%s)", cluster, why.replace("_", " "))
        MOVES.labels(why).inc()
        await self.syncs.delete(held.lease)

    async def _fence(self) -> None:
        """Stop every sync whose Lease we could not renew in time (see the module doc)."""
        now = self.clock()
        for cluster, held in list(self.held.items()):
            if held.syncing and now - held.renewed_at > self.fence_after:
                logger.warning(
                    "sharding: cluster %s's Lease not renewed for %.1fs; stopping its sync "
                    "before another replica may take it",
                    cluster,
                    now - held.renewed_at,
                )
                MOVES.labels("fenced").inc()
                await self._end(cluster, held)

    async def _begin(self, cluster: str, held: Held) -> None:
        """Start the sync; when that fails (the host cannot give its Secrets, say), the next
        round's renewal tries again."""
        try:
            await self._start(cluster)
        except Exception as error:
            logger.warning("sharding: cannot start cluster %s here yet: %r", cluster, error)
            with contextlib.suppress(Exception):
                await self._stop(cluster)
            return
        held.syncing = True

    async def _end(self, cluster: str, held: Held) -> None:
        if held.syncing:
            held.syncing = False
            await self._stop(cluster)
