"""Member faults: a member behind a proxy that answers slowly, fails with 5xx, hangs its watches
mid-stream or cuts its JSON in half, and one that holds an object over the size limit.

Two real kube-apiservers, one cluster each: ``faulty`` reaches member 1 through
:class:`MemberProxy`, ``steady`` reaches member 2 directly. Each test starts ``faulty``, injects
one fault while both members change, and checks that:

- the faulty cluster's status says what is wrong;
- the steady cluster keeps up with its member all along, and its status stays clean;
- once the fault is gone, the faulty cluster converges to its member by itself;
- nothing leaks: the event loop's tasks return to their count before the fault, and once
  ``faulty`` stops, to their count before it started, with no request left open at the proxy.

SQLite only: what is under test is the member side of the sync, not the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import pytest
import pytest_asyncio

from clusterpedia.kube.access import access_from_kubeconfig
from clusterpedia.kube.client import KubeClient
from clusterpedia.storage.catalog import TypeCatalog
from clusterpedia.storage.writer import ResourceWriter
from clusterpedia.sync.cluster_synchro import ClusterSettings, ClusterSynchro
from clusterpedia.sync.worker import SyncSettings
from clusterpedia.testing.consistency import member_state, seed_configmaps, stored_state
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.databases import fresh_database
from clusterpedia.testing.faults import ERROR, HANG, SLOW, TRUNCATE, MemberProxy
from clusterpedia.testing.objects import storage
from clusterpedia.testing.waiting import eventually_async

pytestmark = pytest.mark.asyncio(loop_scope="module")
eventually = partial(eventually_async, timeout=30, interval=0.2)
NAMESPACE = "member-faults"
CONFIGMAPS = [{"group": "", "resources": ["configmaps"]}]
# Fast enough to see each fault within seconds; the defaults are in SyncSettings.
SETTINGS = SyncSettings(
    batch_interval=0.05,
    watch_timeout=(20, 30),
    backoff_initial=0.2,
    backoff_max=1.0,
    request_timeout=2.0,
    watch_idle_timeout=3.0,
    max_object_bytes=64 * 1024,
)
PROBES = ClusterSettings(probe_interval=0.5, status_interval=0.2)


@dataclass
class Rig:
    url: str
    writer: ResourceWriter
    members: dict[str, APIServer]  # cluster name -> its member
    clients: dict[str, KubeClient]  # cluster name -> the test's own client of its member
    proxy: MemberProxy
    steady: ClusterSynchro
    beats: int = 0

    def faulty(self) -> ClusterSynchro:
        return ClusterSynchro(
            name="faulty",
            access=access_from_kubeconfig(self.proxy.kubeconfig()),
            sync_resources=CONFIGMAPS,
            writer=self.writer,
            catalog=TypeCatalog(self.writer.engine),
            settings=SETTINGS,
            cluster_settings=PROBES,
        )

    async def change(self, cluster: str, round_: int, count: int = 10) -> None:
        """Update ``count`` ConfigMaps of the cluster's member."""
        for index in range(count):
            await self.clients[cluster].patch(
                f"/api/v1/namespaces/{NAMESPACE}/configmaps/cm-{index:05d}",
                {"data": {"round": str(round_)}},
            )

    async def heartbeat(self) -> None:
        """A change in the faulty cluster's member every 0.5 s, in a namespace of its own: its
        watch is never silent for long unless it hangs (members send a bookmark only every
        minute or two, longer than these tests wait)."""
        path = f"/api/v1/namespaces/{NAMESPACE}-heartbeat/configmaps/beat"
        while True:
            await self.clients["faulty"].patch(path, {"data": {"beat": str(self.beats)}})
            self.beats += 1
            await asyncio.sleep(0.5)

    async def member_state(self, cluster: str) -> dict[str, int]:
        return await asyncio.to_thread(member_state, self.members[cluster], NAMESPACE)

    async def converged(self, cluster: str) -> bool:
        stored, _ = await stored_state(self.url, cluster, NAMESPACE)
        return stored == await self.member_state(cluster)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database("sqlite", label="member-faults") as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(database: str, member_clusters: list[APIServer]) -> AsyncIterator[Rig]:
    first, second = member_clusters
    for member in member_clusters:
        await seed_configmaps(member, NAMESPACE, 30)
    await seed_configmaps(first, f"{NAMESPACE}-heartbeat", 0)
    clients = {
        name: KubeClient(access_from_kubeconfig(member.kubeconfig.read_bytes()))
        for name, member in (("faulty", first), ("steady", second))
    }
    await clients["faulty"].post(
        f"/api/v1/namespaces/{NAMESPACE}-heartbeat/configmaps", {"metadata": {"name": "beat"}}
    )
    async with storage(database) as (writer, _):
        with MemberProxy(first.url, first.ssl_context()) as proxy:
            steady = ClusterSynchro(
                name="steady",
                access=access_from_kubeconfig(second.kubeconfig.read_bytes()),
                sync_resources=CONFIGMAPS,
                writer=writer,
                catalog=TypeCatalog(writer.engine),
                # Its quiet watches get a bookmark only every minute or two.
                settings=replace(SETTINGS, watch_idle_timeout=300),
                cluster_settings=PROBES,
            )
            steady.start()
            rig = Rig(database, writer, {"faulty": first, "steady": second}, clients, proxy, steady)
            heartbeat = asyncio.create_task(rig.heartbeat())
            try:
                await eventually(lambda: rig.converged("steady"), what="steady synced")
                yield rig
            finally:
                heartbeat.cancel()
                await steady.stop()
                for client in clients.values():
                    await client.close()


def condition(synchro: ClusterSynchro) -> dict[str, Any]:
    """The status of the one synced type (configmaps), as PediaCluster.status shows it."""
    (group,) = synchro.status()["syncResources"]
    (resource,) = group["resources"]
    (sync_condition,) = resource["syncConditions"]
    return sync_condition


def cluster_condition(synchro: ClusterSynchro, kind: str) -> dict[str, Any]:
    (found,) = [c for c in synchro.status()["conditions"] if c["type"] == kind]
    return found


async def shows(synchro: ClusterSynchro, *texts: str) -> dict[str, Any]:
    """Wait until the type's status is Error with every one of ``texts`` in its message."""

    def check() -> dict[str, Any] | None:
        if not synchro.workers:
            return None
        found = condition(synchro)
        if found["status"] == "Error" and all(t in found["message"] for t in texts):
            return found
        return None

    result: dict[str, Any] = await eventually(check, what=f"status shows {texts}")
    return result


async def tasks() -> int:
    """The event loop's tasks, at their fewest over half a second: some live for a moment
    (a ``wait_for`` in a watch, discovery's parallel GETs), a leaked one lives on."""
    fewest = len(asyncio.all_tasks())
    for _ in range(10):
        await asyncio.sleep(0.05)
        fewest = min(fewest, len(asyncio.all_tasks()))
    return fewest


async def no_task_left(before: int) -> None:
    async def check() -> bool:
        return await tasks() <= before

    await eventually(check, what=f"tasks back to {before}")


async def synced(rig: Rig, faulty: ClusterSynchro) -> None:
    """faulty's worker is watching and the stored rows equal the member's."""
    await eventually(
        lambda: faulty.workers and not condition(faulty)["initialListPhase"], what="faulty listed"
    )
    await eventually(lambda: rig.converged("faulty"), what="faulty synced")


async def recovered(rig: Rig, faulty: ClusterSynchro, round_: int) -> None:
    """The fault is gone: faulty converges (changes made meanwhile included) and says so."""
    rig.proxy.fault = None
    await rig.change("faulty", round_)
    await eventually(lambda: rig.converged("faulty"), what="faulty converged")
    await eventually(
        lambda: faulty.workers and condition(faulty)["status"] == "Syncing", what="faulty Syncing"
    )
    assert condition(faulty)["reason"] == ""


async def steady_keeps_up(rig: Rig, round_: int) -> None:
    """While the other member is broken, the steady cluster follows its member."""
    await rig.change("steady", round_)
    await eventually(lambda: rig.converged("steady"), what="steady converged")
    assert condition(rig.steady)["status"] == "Syncing"
    assert cluster_condition(rig.steady, "Ready")["status"] == "True"


@asynccontextmanager
async def faulty_cluster(rig: Rig, fault: str | None = None) -> AsyncIterator[ClusterSynchro]:
    """``faulty`` running (with ``fault`` from its start); afterwards, no task or request of it
    may be left."""
    rig.proxy.fault = fault
    before = await tasks()
    synchro = rig.faulty()
    synchro.start()
    try:
        yield synchro
    finally:
        rig.proxy.fault = None
        await synchro.stop()
    await no_task_left(before)
    await eventually(lambda: rig.proxy.open_requests == 0, what="no request open at the proxy")


async def test_a_slow_member_times_out_and_recovers(rig: Rig) -> None:
    async with faulty_cluster(rig, SLOW) as faulty:  # every answer trickles, from the start
        # Its probe's GET /version takes longer than a request may: the cluster is unhealthy.
        health = await eventually(
            lambda: (
                (found := cluster_condition(faulty, "ClusterHealthy"))["status"] == "False"
                and found
            ),
            what="faulty unhealthy",
        )
        assert health["reason"] == "Unhealthy" and "TimeoutError" in health["message"]
        assert cluster_condition(faulty, "Ready")["status"] == "False"
        await steady_keeps_up(rig, 1)
        await recovered(rig, faulty, 2)
        assert cluster_condition(faulty, "ClusterHealthy")["status"] == "True"


async def test_5xx_from_a_member_is_reported_and_retried(rig: Rig) -> None:
    async with faulty_cluster(rig) as faulty:
        await synced(rig, faulty)
        running = await tasks()
        rig.proxy.fault = ERROR
        await rig.change("faulty", 3)  # open watches end; new requests get 503
        await shows(faulty, "503", "leader changed")
        await steady_keeps_up(rig, 4)
        await recovered(rig, faulty, 5)
        await no_task_left(running)


async def test_a_watch_that_hangs_mid_stream_is_noticed(rig: Rig) -> None:
    async with faulty_cluster(rig) as faulty:
        await synced(rig, faulty)
        running = await tasks()
        rig.proxy.fault = HANG
        await rig.change("faulty", 6)  # these events never arrive; the stream goes silent
        await shows(faulty, "stalled")
        assert not await rig.converged("faulty")
        await steady_keeps_up(rig, 7)
        await recovered(rig, faulty, 8)
        await no_task_left(running)


async def test_truncated_json_is_an_error_not_a_crash(rig: Rig) -> None:
    async with faulty_cluster(rig, TRUNCATE) as faulty:  # the initial list is half a document
        await shows(faulty, "not JSON")
        await steady_keeps_up(rig, 9)
        await recovered(rig, faulty, 10)
        running = await tasks()
        rig.proxy.fault = TRUNCATE  # now mid-watch: an event cut in half
        await rig.change("faulty", 11)
        await shows(faulty, "malformed event")
        await recovered(rig, faulty, 12)
        await no_task_left(running)


async def test_an_object_over_the_size_limit_is_named_not_stored(rig: Rig) -> None:
    client = rig.clients["faulty"]
    base = f"/api/v1/namespaces/{NAMESPACE}/configmaps"

    async def all_but_huge_stored() -> bool:
        member = await rig.member_state("faulty")
        stored, _ = await stored_state(rig.url, "faulty", NAMESPACE)
        return "huge" in member and {**stored, "huge": member["huge"]} == member

    async with faulty_cluster(rig) as faulty:
        await synced(rig, faulty)
        await client.post(base, {"metadata": {"name": "huge"}, "data": {"v": "x" * 100_000}})
        try:
            found = await eventually(
                lambda: condition(faulty)["reason"] == "ObjectsTooLarge" and condition(faulty),
                what="status names the object",
            )
            assert found["status"] == "Syncing"
            assert f"{NAMESPACE}/huge (" in found["message"]
            await rig.change("faulty", 13)  # everything else still syncs
            await eventually(all_but_huge_stored, what="all but the huge one stored")
            # Once it fits, it is stored and the status is clean again.
            await client.patch(f"{base}/huge", {"data": {"v": "small"}})
            await eventually(lambda: rig.converged("faulty"), what="stored once it fits")
            assert condition(faulty)["reason"] == ""
        finally:
            await client.delete(f"{base}/huge")


async def test_a_member_served_under_a_path_syncs(
    database: str, member_clusters: list[APIServer]
) -> None:
    """As Rancher and other proxies serve clusters (``https://rancher/k8s/clusters/c-1``):
    every request, health probes included, goes under the path (the proxy answers 404
    elsewhere). This once ended the cluster's sync silently after "sync started"."""
    member, namespace = member_clusters[0], "under-a-path"
    await seed_configmaps(member, namespace, 20)
    async with storage(database) as (writer, _):
        with MemberProxy(member.url, member.ssl_context(), prefix="/k8s/clusters/c-1") as proxy:
            synchro = ClusterSynchro(
                name="prefixed",
                access=access_from_kubeconfig(proxy.kubeconfig()),
                sync_resources=CONFIGMAPS,
                writer=writer,
                catalog=TypeCatalog(writer.engine),
                settings=SETTINGS,
                cluster_settings=PROBES,
            )
            synchro.start()
            try:

                async def synced() -> bool:
                    stored, _ = await stored_state(database, "prefixed", namespace)
                    return stored == await asyncio.to_thread(member_state, member, namespace)

                await eventually(synced, what="the prefixed member synced")
                assert synchro.healthy is True
                assert proxy.requests > 0 and proxy.outside_prefix == 0
            finally:
                await synchro.stop()
