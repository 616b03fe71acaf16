"""Automatic sharding with real replicas (``clusterpedia run --sharding``) on one database,
12 PediaClusters over the two member API servers, and the members churning throughout:

- every cluster is synced by exactly one replica (its sync Lease's holder, the replica named
  in ``status.syncedBy``), the shares are even, and the change log has no gap and no event
  twice;
- ``kill -9`` of one replica: its clusters are synced elsewhere within the stated time
  (Lease duration + two rounds), and nothing is lost;
- a fourth replica takes its share, and few clusters move;
- a replica cut from the host (its kubeconfig goes through a TCP proxy that is then cut)
  stops syncing each of its clusters before another replica starts it.

On PostgreSQL and on MariaDB.

Shard ``sharded-e2e`` keeps the PediaClusters of other tests out (its replicas see only the
clusters whose ``spec.shardingName`` names it): explicit and automatic sharding combined.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from clusterpedia.testing.consistency import (
    ConfigMapChurn,
    change_log_report,
    converged,
    seed_configmaps,
)
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.databases import fresh_database, require_server
from clusterpedia.testing.faults import TcpProxy
from clusterpedia.testing.objects import configmaps_of, pediacluster
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually

SHARD = "sharded-e2e"
NAMESPACE = "sharding"
CLUSTERS = [f"shard-{index:02d}" for index in range(12)]
DURATION = 6  # --sharding-lease-duration: a round every 1.2 s, fencing after 3 s
FAILOVER_LIMIT = DURATION + 2 * 1.2 + 10  # the stated bound, plus starting the sync
IDENTITY = re.compile(r"automatic sharding as replica (\S+)")


@pytest.fixture(scope="module")
def members(member_clusters: list[APIServer]) -> Iterator[list[APIServer]]:
    for member in member_clusters:
        asyncio.run(seed_configmaps(member, NAMESPACE, 40))
    yield member_clusters
    for member in member_clusters:
        member.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def member_of(cluster: str, members: list[APIServer]) -> APIServer:
    return members[int(cluster.split("-")[1]) % len(members)]


class Replica:
    def __init__(self, name: str, tmp_path: Path, url: str, kubeconfig: Path):
        self.product = ProductProcess(
            workdir=tmp_path / name,
            kubeconfig=kubeconfig,
            storage_url=url,
            extra_args=(
                "--sharding",
                f"--sharding-name={SHARD}",
                f"--sharding-lease-duration={DURATION}",
            ),
            name=name,
        )
        self.identity = ""

    def start(self) -> Replica:
        self.product.start()
        eventually(lambda: IDENTITY.search(self.product.log()) is not None, timeout=30)
        match = IDENTITY.search(self.product.log())
        assert match is not None
        self.identity = match.group(1)
        return self

    def times(self, pattern: str) -> dict[str, datetime]:
        """cluster -> when this replica last logged ``pattern`` (with {cluster} in it)."""
        found: dict[str, datetime] = {}
        regex = re.compile(
            r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*" + pattern.format(cluster=r"(\S+?)")
        )
        for line in self.product.log().splitlines():
            match = regex.search(line)
            if match:
                found[match.group(2)] = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
        return found


def sync_leases(host: APIServer) -> dict[str, str]:
    """cluster -> holder, from the host's sync Leases of the shard."""
    listed = orjson.loads(
        host.kubectl(
            "get", "leases", "-n", "clusterpedia-system", "-o", "json",
            "-l", f"sharding.clusterpedia.io/sync-of={SHARD}",
        ).stdout
    )  # fmt: skip
    return {
        item["metadata"]["name"].removeprefix("clusterpedia-sync-"): item["spec"].get(
            "holderIdentity"
        )
        or ""
        for item in listed["items"]
    }


def synced_by(host: APIServer) -> dict[str, str]:
    listed = orjson.loads(host.kubectl("get", "pediaclusters", "-o", "json").stdout)
    return {
        item["metadata"]["name"]: (item.get("status") or {}).get("syncedBy", "")
        for item in listed["items"]
        if item["metadata"]["name"] in CLUSTERS
    }


def settled(host: APIServer, live: list[Replica]) -> dict[str, str] | None:
    """The holders when every cluster is held by a live replica and its status agrees."""
    identities = {replica.identity for replica in live}
    holders = sync_leases(host)
    if sorted(holders) != CLUSTERS or not set(holders.values()) <= identities:
        return None
    return holders if synced_by(host) == holders else None


def all_converged(url: str, members: list[APIServer]) -> bool:
    return all(
        converged(url, cluster, member_of(cluster, members), NAMESPACE) for cluster in CLUSTERS
    )


def check_change_log(url: str) -> None:
    """No gap in the log, and no member state logged twice (two replicas syncing one
    cluster at once would log each change twice)."""
    seen: Counter[tuple[str, str, int, str]] = Counter()
    for cluster in CLUSTERS:
        rvs, head, pruned, _ = asyncio.run(change_log_report(url, cluster))
        assert rvs == list(range(pruned + 1, head + 1)), "the change log has no gaps"
    events = asyncio.run(_events(url))
    for cluster, name, member_rv, kind in events:
        seen[(cluster, name, member_rv, kind)] += 1
    twice = [key for key, count in seen.items() if count > 1]
    assert not twice, f"logged twice: {twice[:5]}"


async def _events(url: str) -> list[tuple[str, str, int, str]]:
    from clusterpedia.storage.changelog import ChangeLog
    from clusterpedia.storage.engine import create_engine

    engine = create_engine(url)
    try:
        found = []
        for event in await ChangeLog(engine).read(after=0, limit=10**7):
            if event.type != "DELETED":
                annotations = event.parsed["metadata"]["annotations"]
                member_rv = int(annotations["shadow.clusterpedia.io/member-resource-version"])
                found.append((event.cluster, event.name, member_rv, event.type))
        return found
    finally:
        await engine.dispose()


def apply_clusters(host: APIServer, members: list[APIServer]) -> None:
    specs: list[dict[str, Any]] = []
    for cluster in CLUSTERS:
        spec = pediacluster(
            cluster, member_of(cluster, members).kubeconfig.read_bytes(), configmaps_of(NAMESPACE)
        )
        spec["spec"]["shardingName"] = SHARD
        specs.append(spec)
    host.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(specs))


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_replicas_share_the_clusters_fail_over_and_fence(
    host: APIServer, members: list[APIServer], tmp_path: Path, dialect: str
) -> None:
    require_server(dialect)
    with fresh_database(dialect, label="sharding") as url:
        replicas = [
            Replica(f"replica-{index}", tmp_path, url, host.kubeconfig).start()
            for index in range(3)
        ]
        started = list(replicas)  # every one is stopped at the end, the cut one too
        proxy: TcpProxy | None = None
        try:
            apply_clusters(host, members)
            holders = eventually(lambda: settled(host, replicas), timeout=90, what="all synced")
            assert sorted(Counter(holders.values()).values()) == [4, 4, 4]
            eventually(lambda: all_converged(url, members), timeout=120, what="initial sync")

            with ConfigMapChurn(members, NAMESPACE, names=40, rate=20) as churn:
                # kill -9 while the members change: its clusters move, within the bound.
                victim = replicas.pop(0)
                orphans = {c for c, holder in holders.items() if holder == victim.identity}
                victim.product.kill()
                killed = time.monotonic()
                holders = eventually(
                    lambda: settled(host, replicas), timeout=60, what="the orphans move"
                )
                failover = time.monotonic() - killed
                assert failover <= FAILOVER_LIMIT, f"failover took {failover:.1f}s"
                assert orphans and all(holders[c] != victim.identity for c in orphans)

                # A fourth replica: it takes its share; only about its share moves.
                before = dict(holders)
                replicas.append(Replica("replica-3", tmp_path, url, host.kubeconfig).start())
                started.append(replicas[-1])
                holders = eventually(
                    lambda: (
                        (h := settled(host, replicas))
                        and sorted(Counter(h.values()).values()) == [4, 4, 4]
                        and h
                    ),
                    timeout=60,
                    what="the newcomer takes its share",
                )
                moved = [c for c in CLUSTERS if before[c] != holders[c]]
                assert 4 <= len(moved) <= 6, moved
                eventually(lambda: churn.changes >= 100, timeout=60, what="member changes")

            eventually(lambda: all_converged(url, members), timeout=120, what="nothing lost")
            check_change_log(url)

            # Partition one replica from the host: it fences before anyone else starts.
            proxy = TcpProxy("127.0.0.1", int(host.url.rsplit(":", 1)[1])).start()
            through_proxy = tmp_path / "host-through-proxy.kubeconfig"
            config = host.kubeconfig_dict()
            config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
            through_proxy.write_text(yaml.safe_dump(config))
            cut = Replica("replica-cut", tmp_path, url, through_proxy).start()
            replicas.append(cut)
            started.append(cut)
            holders = eventually(
                lambda: (h := settled(host, replicas)) and cut.identity in h.values() and h,
                timeout=60,
                what="the replica behind the proxy syncs its share",
            )
            theirs = {c for c, holder in holders.items() if holder == cut.identity}
            proxy.cut()
            replicas.remove(cut)
            eventually(
                lambda: (
                    (h := settled(host, replicas))
                    and not theirs & {c for c, holder in h.items() if holder == cut.identity}
                ),
                timeout=60,
                what="the others take the cut replica's clusters",
            )
            fenced = cut.times(r"sharding: cluster {cluster}'s Lease not renewed")
            # Who took each of its clusters from it (an earlier move of the same cluster
            # between other replicas is another line, not this one).
            taken = {}
            took_from_cut = r"sharding: took cluster {cluster} from " + re.escape(cut.identity)
            for replica in replicas:
                taken.update(replica.times(took_from_cut))
            for cluster in theirs:
                assert fenced[cluster] < taken[cluster], (cluster, fenced, taken)
            margin = min((taken[c] - fenced[c]).total_seconds() for c in theirs)
            eventually(lambda: all_converged(url, members), timeout=120, what="after the cut")
            check_change_log(url)
            print(
                f"sharding ({dialect}): failover after kill -9 in {failover:.1f}s; "
                f"{len(moved)} of 12 clusters moved for a fourth replica; the cut replica "
                "stopped at least "
                f"{margin:.1f}s before another started"
            )  # shown in the closing note
        finally:
            host.kubectl(
                "delete", "pediacluster", *CLUSTERS, "--timeout=90s", "--ignore-not-found",
                check=False,
            )  # fmt: skip
            for replica in started:
                replica.product.stop()
            if proxy is not None:
                proxy.close()
            for label in ("replica-of", "sync-of"):  # the cut replica could not delete its own
                host.kubectl(
                    "delete", "leases", "-n", "clusterpedia-system",
                    "-l", f"sharding.clusterpedia.io/{label}={SHARD}", check=False,
                )  # fmt: skip
