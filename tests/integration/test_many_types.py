"""A member with 250 custom resource types beside its built-ins (as a cluster running
cert-manager, Istio and Argo has), synced with ``group: "*"`` and ``syncAllCustomResources``.

Every type must reach Syncing while the cluster stays healthy throughout (with a pool of 32
connections the 33rd watch starved the health probe, and the cluster flapped forever), no more
than ``list_concurrency`` lists may run at once, and once the CRDs are deleted again their
workers, tasks and connections must be gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import pytest

from clusterpedia.kube.access import access_from_kubeconfig
from clusterpedia.storage.catalog import TypeCatalog
from clusterpedia.sync.cluster_synchro import ClusterSettings, ClusterSynchro
from clusterpedia.sync.worker import SyncSettings
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.databases import fresh_database, require_server
from clusterpedia.testing.objects import storage
from clusterpedia.testing.waiting import eventually_async

pytestmark = pytest.mark.asyncio(loop_scope="module")
eventually = partial(eventually_async, timeout=180, interval=0.5)
GROUPS, KINDS_PER_GROUP, OBJECTS_PER_KIND = 25, 10, 2  # 250 types, 500 objects
LABEL_KEY = "clusterpedia-test"
LABEL = f"{LABEL_KEY}=many-types"
NAMESPACE = "many-types"
SETTINGS = SyncSettings(batch_interval=0.05, list_concurrency=4)
PROBES = ClusterSettings(probe_interval=0.5, discovery_interval=2.0, status_interval=0.5)


def _crds() -> list[dict[str, object]]:
    crds = []
    for group_index in range(GROUPS):
        group = f"g{group_index:02d}.many.example.com"
        for kind_index in range(KINDS_PER_GROUP):
            plural, kind = f"things{kind_index}", f"Thing{kind_index}"
            schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            crds.append(
                {
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "kind": "CustomResourceDefinition",
                    "metadata": {"name": f"{plural}.{group}", "labels": {LABEL_KEY: "many-types"}},
                    "spec": {
                        "group": group,
                        "scope": "Namespaced",
                        "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
                        "versions": [{"name": "v1", "served": True, "storage": True,
                                      "schema": {"openAPIV3Schema": schema}}],
                    },
                }
            )  # fmt: skip
    return crds


def _objects(crds: list[dict[str, object]]) -> list[dict[str, object]]:
    objects = []
    for crd in crds:
        spec = crd["spec"]
        assert isinstance(spec, dict)
        for index in range(OBJECTS_PER_KIND):
            objects.append(
                {
                    "apiVersion": f"{spec['group']}/v1",
                    "kind": spec["names"]["kind"],
                    "metadata": {"name": f"x-{index}", "namespace": NAMESPACE},
                    "spec": {"index": index},
                }
            )
    return objects


def _apply(member: APIServer, items: list[dict[str, object]]) -> None:
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    member.kubectl("apply", "--server-side", "-f", "-", input=document)


@pytest.fixture(scope="module")
def member(control_plane: ControlPlane) -> Iterator[APIServer]:
    """A member of its own, so that no other test's discovery sees 250 CRDs."""
    server = control_plane.add_apiserver("many-types")
    server.kubectl("create", "namespace", NAMESPACE)
    yield server
    server.stop()


@dataclass
class Watchdog:
    """Samples the synchro while it runs: health after the first healthy probe, and how many
    of its workers are listing at once."""

    synchro: ClusterSynchro
    flaps: list[str] = field(default_factory=list)
    most_lists: int = 0

    async def run(self) -> None:
        seen_healthy = False
        while True:
            if self.synchro.healthy is True:
                seen_healthy = True
            elif seen_healthy:
                self.flaps.append(self.synchro.health_message or str(self.synchro.healthy))
            listing = sum(
                1
                for syncer, _ in self.synchro.workers.values()
                if syncer.status.message == "listing"
            )
            self.most_lists = max(self.most_lists, listing)
            await asyncio.sleep(0.05)


def custom_types(synchro: ClusterSynchro) -> list[str]:
    types = [str(syncer.target.rtype) for syncer, _ in synchro.workers.values()]
    return [t for t in types if t.endswith(".many.example.com")]


def tasks_of(name: str) -> list[str]:
    """The names of the event loop's tasks that belong to cluster ``name``."""
    return [
        t.get_name()
        for t in asyncio.all_tasks()
        if t.get_name() == f"cluster {name}" or t.get_name().startswith(f"sync {name}/")
    ]


def all_syncing(synchro: ClusterSynchro) -> bool:
    workers = [syncer for syncer, _ in synchro.workers.values()]
    return len(custom_types(synchro)) == GROUPS * KINDS_PER_GROUP and all(
        s.status.phase == "Syncing" and not s.status.initial_list_phase for s in workers
    )


async def fewest_tasks(seconds: float = 1.0) -> int:
    """The event loop's task count, fewest over a short while (short-lived tasks come and go)."""
    fewest = len(asyncio.all_tasks())
    for _ in range(int(seconds / 0.05)):
        await asyncio.sleep(0.05)
        fewest = min(fewest, len(asyncio.all_tasks()))
    return fewest


DIALECTS = ("sqlite", "postgresql", "mysql")


@pytest.fixture(scope="module")
def database_urls() -> Iterator[dict[str, str]]:
    """A fresh database on each server: the three syncs run side by side, so the member's
    250 CRDs are created and deleted once."""
    with contextlib.ExitStack() as stack:
        urls = {}
        for dialect in DIALECTS:
            require_server(dialect)
            urls[dialect] = stack.enter_context(fresh_database(dialect, label="many-types"))
        yield urls


async def test_250_custom_types_sync_without_a_health_flap_or_a_leak(
    member: APIServer, database_urls: dict[str, str]
) -> None:
    crds = _crds()
    _apply(member, crds)
    member.kubectl("wait", "--for=condition=established", "--timeout=180s", "crd", "-l", LABEL)
    _apply(member, _objects(crds))
    async with contextlib.AsyncExitStack() as stack:
        baseline = await fewest_tasks()
        synchros: list[ClusterSynchro] = []
        for dialect, url in database_urls.items():
            writer, _ = await stack.enter_async_context(storage(url))
            synchros.append(
                ClusterSynchro(
                    name=f"many-{dialect}",
                    access=access_from_kubeconfig(member.kubeconfig.read_bytes()),
                    sync_resources=[{"group": "*", "resources": ["*"]}],
                    all_custom_resources=True,
                    writer=writer,
                    catalog=TypeCatalog(writer.engine),
                    settings=SETTINGS,
                    cluster_settings=PROBES,
                )
            )
        watchdogs = [Watchdog(synchro) for synchro in synchros]
        samplers = [asyncio.create_task(watchdog.run()) for watchdog in watchdogs]
        for synchro in synchros:
            synchro.start()
        try:
            for synchro in synchros:
                await eventually(lambda s=synchro: all_syncing(s), what=f"{synchro.name} syncing")
            builtin = len(synchros[0].workers) - GROUPS * KINDS_PER_GROUP
            assert builtin > 10  # configmaps, pods, services, ...
            for synchro, watchdog in zip(synchros, watchdogs, strict=True):
                conditions = {c["type"]: c["status"] for c in synchro.status()["conditions"]}
                assert conditions["ClusterHealthy"] == "True" and conditions["Ready"] == "True"
                await eventually(lambda s=synchro: s.status()["watches"] == len(s.workers))
                assert 1 <= watchdog.most_lists <= SETTINGS.list_concurrency

            member.kubectl("delete", "crd", "-l", LABEL, "--wait=true", "--timeout=180s")
            for synchro, watchdog in zip(synchros, watchdogs, strict=True):
                await eventually(lambda s=synchro: not custom_types(s), what="custom workers gone")
                await eventually(lambda s=synchro: s.client.open_watches == builtin)
                assert synchro.client.requests_in_flight == 0
                # The cluster loop and one task per remaining worker: nothing of the CRDs.
                assert len(tasks_of(synchro.name)) == 1 + builtin
                assert watchdog.flaps == [], synchro.name
        finally:
            for sampler in samplers:
                sampler.cancel()
            await asyncio.gather(*samplers, return_exceptions=True)
            for synchro in synchros:
                await synchro.stop()
        for synchro in synchros:
            assert tasks_of(synchro.name) == [] and synchro.client.open_watches == 0
        tasks_after = await fewest_tasks()
        assert tasks_after <= baseline, [t.get_name() for t in asyncio.all_tasks()]
