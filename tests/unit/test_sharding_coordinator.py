"""Automatic sharding's decisions, with Leases in memory that behave as the API server's do
(optimistic resourceVersions, 409 on a stale write) and a clock the test moves: who owns
what, a dead replica's clusters moving only after its Leases run out, a partitioned replica
stopping before anyone else may start, a join moving few clusters.
(tests/e2e/test_sharding.py runs real replicas against a real host.)"""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest

from clusterpedia.kube.client import KubeError
from clusterpedia.sharding.coordinator import (
    SYNC_PREFIX,
    ShardCoordinator,
    assignment,
    lease_name,
    replica_identity,
)
from clusterpedia.sharding.leases import Lease, Observer

DURATION = 15.0
CLUSTERS = [f"member-{index}" for index in range(12)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Host:
    """Leases by name, each write bumping a resourceVersion; ``down`` cuts one replica."""

    def __init__(self) -> None:
        self.leases: dict[str, tuple[Lease, str]] = {}  # name -> (lease, label value)
        self.version = 0
        self.down: set[str] = set()

    def bump(self) -> str:
        self.version += 1
        return str(self.version)


class FakeStore:
    def __init__(self, host: Host, replica: str, kind: str):
        self.host, self.replica, self.kind = host, replica, kind

    def _check(self) -> None:
        if self.replica in self.host.down:
            raise KubeError("connection refused")

    async def list(self, value: str) -> list[Lease]:
        self._check()
        return [
            lease
            for name, (lease, label) in self.host.leases.items()
            if label == value and name.startswith(self.kind)
        ]

    async def create(self, name: str, *, holder: str, duration: float, value: str) -> Lease | None:
        self._check()
        if name in self.host.leases:
            return None
        lease = Lease(name, holder, duration, self.host.bump())
        self.host.leases[name] = (lease, value)
        return lease

    async def renew(self, lease: Lease, *, holder: str) -> Lease | None:
        self._check()
        current = self.host.leases.get(lease.name)
        if current is None or current[0].resource_version != lease.resource_version:
            return None
        renewed = Lease(lease.name, holder, lease.duration, self.host.bump())
        self.host.leases[lease.name] = (renewed, current[1])
        return renewed

    async def delete(self, lease: Lease) -> bool:
        self._check()
        current = self.host.leases.get(lease.name)
        if current is None or current[0].resource_version != lease.resource_version:
            return False
        del self.host.leases[lease.name]
        return True


class Replica:
    def __init__(self, host: Host, clock: Clock, identity: str):
        self.syncing: set[str] = set()
        self.log: list[tuple[float, str, str]] = []  # (time, start/stop, cluster)

        async def start(cluster: str) -> None:
            assert cluster not in self.syncing
            self.syncing.add(cluster)
            self.log.append((clock.now, "start", cluster))

        async def stop(cluster: str) -> None:
            self.syncing.discard(cluster)
            self.log.append((clock.now, "stop", cluster))

        self.coordinator = ShardCoordinator(
            members=FakeStore(host, identity, "clusterpedia-replica-"),  # type: ignore[arg-type]
            syncs=FakeStore(host, identity, SYNC_PREFIX),  # type: ignore[arg-type]
            identity=identity,
            shard="",
            duration=DURATION,
            start=start,
            stop=stop,
            clock=clock,
        )
        for cluster in CLUSTERS:
            self.coordinator.add(cluster)

    async def tick(self) -> None:
        with contextlib.suppress(KubeError):
            await self.coordinator.tick()
        await self.coordinator._fence()


async def rounds(replicas: list[Replica], clock: Clock, seconds: float) -> None:
    """Every live replica ticks every interval (3 s) for ``seconds``."""
    step = replicas[0].coordinator.interval
    end = clock.now + seconds
    while clock.now < end:
        for replica in replicas:
            await replica.tick()
        clock.now += step


def synced(replicas: list[Replica]) -> Counter[str]:
    return Counter(cluster for replica in replicas for cluster in replica.syncing)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.mark.asyncio
async def test_each_cluster_syncs_on_exactly_one_replica_its_rendezvous_owner(clock: Clock) -> None:
    host = Host()
    replicas = [Replica(host, clock, f"r{index}") for index in range(3)]
    await rounds(replicas, clock, 10)
    counts = synced(replicas)
    assert sorted(counts) == sorted(CLUSTERS) and set(counts.values()) == {1}
    live = [replica.coordinator.identity for replica in replicas]
    owners = assignment(CLUSTERS, live)
    for replica in replicas:
        assert len(replica.syncing) == 4  # 12 over 3
        assert replica.syncing == {c for c in CLUSTERS if owners[c] == replica.coordinator.identity}
        assert replica.coordinator.replicas == sorted(live)
    holders = {
        lease.holder for lease, _ in host.leases.values() if lease.name.startswith(SYNC_PREFIX)
    }
    assert holders == set(live)


@pytest.mark.asyncio
async def test_a_dead_replicas_clusters_move_only_after_its_leases_run_out(clock: Clock) -> None:
    host = Host()
    replicas = [Replica(host, clock, f"r{index}") for index in range(3)]
    await rounds(replicas, clock, 10)
    dead, alive = replicas[0], replicas[1:]
    orphans = set(dead.syncing)
    assert orphans
    died_at = clock.now - dead.coordinator.interval  # its last round, its last renewals
    await rounds(alive, clock, DURATION - 1)  # kill -9: it just stops renewing
    assert not orphans & set(synced(alive))  # its Leases have not run out yet
    await rounds(alive, clock, 2 * alive[0].coordinator.interval + 1)
    assert set(synced(alive)) == set(CLUSTERS)
    assert set(synced(alive).values()) == {1}
    taken = [
        t for replica in alive for t, what, c in replica.log if what == "start" and c in orphans
    ]
    assert min(taken) - died_at > DURATION
    assert max(taken) - died_at <= DURATION + 2 * alive[0].coordinator.interval


@pytest.mark.asyncio
async def test_a_partitioned_replica_stops_before_another_may_start(clock: Clock) -> None:
    host = Host()
    replicas = [Replica(host, clock, f"r{index}") for index in range(3)]
    await rounds(replicas, clock, 10)
    cut = replicas[2]
    clusters = set(cut.syncing)
    host.down.add("r2")  # its renewals fail; it keeps ticking, and fences
    step = 0.5
    while clock.now < 1000 + 10 + 3 * DURATION:
        for replica in replicas:
            await replica.tick()
        clock.now += step
    stopped = {c: t for t, what, c in cut.log if what == "stop"}
    started = {
        c: t
        for replica in replicas[:2]
        for t, what, c in replica.log
        if what == "start" and c in clusters
    }
    assert set(stopped) == clusters == set(started)
    for cluster in clusters:
        assert stopped[cluster] < started[cluster] - DURATION / 4, cluster
    assert not cut.syncing
    assert set(synced(replicas).values()) == {1}


@pytest.mark.asyncio
async def test_a_healed_partition_resumes_when_nobody_took_the_lease(clock: Clock) -> None:
    host = Host()
    alone = Replica(host, clock, "solo")
    await rounds([alone], clock, 5)
    assert alone.syncing == set(CLUSTERS)
    host.down.add("solo")
    await rounds([alone], clock, DURATION / 2 + 4)
    assert not alone.syncing  # fenced
    host.down.clear()
    await rounds([alone], clock, 4)
    assert alone.syncing == set(CLUSTERS)  # its own Leases, unchanged: renewed and resumed


@pytest.mark.asyncio
async def test_a_joining_replica_takes_its_share_and_few_clusters_move(clock: Clock) -> None:
    host = Host()
    replicas = [Replica(host, clock, f"r{index}") for index in range(3)]
    await rounds(replicas, clock, 10)
    before = {c: r.coordinator.identity for r in replicas for c in r.syncing}
    replicas.append(Replica(host, clock, "r3"))
    await rounds(replicas, clock, 12)
    after = {c: r.coordinator.identity for r in replicas for c in r.syncing}
    assert sorted(after) == sorted(CLUSTERS) and set(synced(replicas).values()) == {1}
    moved = {c for c in CLUSTERS if before[c] != after[c]}
    assert sorted(Counter(after.values()).values()) == [3, 3, 3, 3]
    assert 3 <= len(moved) <= 4  # the minimum is the newcomer's 3


@pytest.mark.asyncio
async def test_forgetting_a_cluster_stops_it_and_frees_its_lease(clock: Clock) -> None:
    host = Host()
    replica = Replica(host, clock, "solo")
    await rounds([replica], clock, 5)
    await replica.coordinator.forget("member-3")
    assert "member-3" not in replica.syncing
    assert lease_name(SYNC_PREFIX, "member-3") not in host.leases
    await replica.coordinator.close()
    assert not replica.syncing and not host.leases


def test_the_observer_judges_expiry_on_its_own_clock() -> None:
    clock = Clock()
    observer = Observer(clock)
    lease = Lease("x", "someone", 10, "5")
    assert not observer.expired(lease)  # never seen: fresh
    observer.see([lease])
    clock.now += 9
    observer.see([lease])
    assert not observer.expired(lease)
    clock.now += 2
    assert observer.expired(lease)
    renewed = Lease("x", "someone", 10, "6")
    observer.see([renewed])
    assert not observer.expired(renewed)


def test_names_fit_kubernetes() -> None:
    assert replica_identity("Clusterpedia_Pod-0", "ab12cd") == "clusterpedia-pod-0-ab12cd"
    long = lease_name(SYNC_PREFIX, "c" * 300)
    assert len(long) == 253 and long != lease_name(SYNC_PREFIX, "c" * 299 + "d")


def test_bounded_rendezvous_balances_and_moves_close_to_the_minimum() -> None:
    three = ["a", "b", "c"]
    names = [f"cluster-{index}" for index in range(300)]
    before = assignment(names, three)
    assert sorted(Counter(before.values()).values()) == [100, 100, 100]
    joined = assignment(names, [*three, "d"])
    assert sorted(Counter(joined.values()).values()) == [75, 75, 75, 75]
    moved = [name for name in names if before[name] != joined[name]]
    assert 75 <= len(moved) <= 90  # the minimum is the newcomer's 75
    left = assignment(names, three[1:])
    assert 100 <= sum(before[n] != left[n] for n in names) <= 115  # the minimum: a's 100
    assert assignment(names, []) == {}


@pytest.mark.asyncio
async def test_a_start_that_fails_is_tried_again_next_round(clock: Clock) -> None:
    host = Host()
    replica = Replica(host, clock, "solo")
    original = replica.coordinator._start
    failures = {"member-0"}

    async def flaky(cluster: str) -> None:
        if cluster in failures:
            failures.discard(cluster)
            raise KubeError("the Secret cannot be read")
        await original(cluster)

    replica.coordinator._start = flaky
    await rounds([replica], clock, replica.coordinator.interval)  # one round
    assert "member-0" not in replica.syncing and len(replica.syncing) == 11
    assert not replica.coordinator.syncs_here("member-0")
    await rounds([replica], clock, replica.coordinator.interval)
    assert replica.syncing == set(CLUSTERS)
