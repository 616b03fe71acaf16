"""Everything one member cluster runs: its monitor (health), its negotiator (which types),
one worker per type, and the status that describes them.

The monitor decides: two failed probes stop the workers (rows are kept) and mark the cluster
unhealthy; the first good probe after that starts them again, and each relists from the stored
resourceVersions. Discovery is refreshed periodically so a CRD created later under a wildcard
starts syncing, and a removed one stops and its rows go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clusterpedia.backoff import Backoff
from clusterpedia.kube.access import MemberAccess
from clusterpedia.kube.client import KubeClient
from clusterpedia.storage import Catalog, ObjectWrites, StorageError
from clusterpedia.sync import status as rendering
from clusterpedia.sync.cluster_monitor import ClusterMonitor
from clusterpedia.sync.metrics import MEMBER_REQUESTS, MEMBER_WATCHES
from clusterpedia.sync.resource_negotiator import ResourceNegotiator
from clusterpedia.sync.targets import SyncTarget
from clusterpedia.sync.worker import ResourceSyncer, SyncSettings

logger = logging.getLogger(__name__)

StatusReport = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class ClusterSettings:
    probe_interval: float = 5.0
    failures_to_unhealthy: int = 2
    discovery_interval: float = 30.0
    status_interval: float = 1.0  # status patches are coalesced to about one per interval
    # A status whose only news is progress (object counts, last event times, open watches)
    # waits this long: a busy member changed its status every second, and 20 of them sent the
    # host 20 patches a second, each one also an event our own operator handled.
    progress_interval: float = 15.0
    ignore_sync_lease: bool = False  # the original's IgnoreSyncLease gate: never sync Leases


class ClusterSynchro:
    """Runs and reports the sync of one member cluster until stopped."""

    def __init__(
        self,
        *,
        name: str,
        access: MemberAccess,
        sync_resources: Sequence[Mapping[str, Any]],
        writer: ObjectWrites,
        catalog: Catalog,
        report: StatusReport | None = None,
        settings: SyncSettings | None = None,
        cluster_settings: ClusterSettings | None = None,
        warnings: Sequence[str] = (),
        all_custom_resources: bool = False,
        process_list_slots: Sequence[asyncio.Semaphore] = (),
        client: KubeClient | None = None,
    ):
        self.name = name
        self.access = access
        self.writer = writer
        self.catalog = catalog
        self.report = report
        self.settings = settings or SyncSettings()
        self.cluster_settings = cluster_settings or ClusterSettings()
        self.client = client or KubeClient(
            access,
            request_timeout=self.settings.request_timeout,
            watch_idle_timeout=self.settings.watch_idle_timeout,
            qps=self.settings.kube_api_qps,
            burst=self.settings.kube_api_burst,
        )
        self.monitor = ClusterMonitor(
            name,
            self.client,
            catalog,
            failures_to_unhealthy=self.cluster_settings.failures_to_unhealthy,
        )
        self.negotiator = ResourceNegotiator(
            name,
            self.client,
            catalog,
            sync_resources,
            all_custom_resources=all_custom_resources,
            ignore_leases=self.cluster_settings.ignore_sync_lease,
        )
        self.list_slots = (asyncio.Semaphore(self.settings.list_concurrency), *process_list_slots)
        self.workers: dict[tuple[str, str, str], tuple[ResourceSyncer, asyncio.Task[None]]] = {}
        self.internal_error = ""  # why the loop last failed, until a probe succeeds again
        self.warnings = [*warnings, *access.warnings]
        if access.insecure:
            self.warnings.append(
                "no caData: TLS to the member is not verified (as the original does)"
            )
        self._task: asyncio.Task[None] | None = None
        self._last_report: dict[str, Any] | None = None
        self._last_report_at = 0.0
        self._transitions = rendering.Transitions()

    @property
    def healthy(self) -> bool | None:
        return self.monitor.healthy

    @property
    def health_message(self) -> str:
        return self.monitor.message

    @property
    def version(self) -> str:
        return self.monitor.version

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        MEMBER_WATCHES.labels(self.name).set_function(lambda: self.client.open_watches)
        MEMBER_REQUESTS.labels(self.name).set_function(lambda: self.client.requests_in_flight)
        self._task = asyncio.create_task(self._run(), name=f"cluster {self.name}")

    async def stop(self) -> None:
        """Stop probing and syncing (rows are kept) and close the member connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._stop_workers()
        await self.client.close()
        for gauge in (MEMBER_WATCHES, MEMBER_REQUESTS):
            with contextlib.suppress(KeyError):
                gauge.remove(self.name)

    async def _run(self) -> None:
        """The cluster's loop, restarted after anything unexpected: an odd value or a bug
        never ends a cluster's sync silently; the status and the log say what happened."""
        backoff = Backoff(1.0, 60.0)
        while True:
            try:
                await self._loop()
            except Exception as error:
                delay = backoff.next_delay()
                logger.exception(
                    "cluster %s: its sync loop failed; restarting it in %.0fs", self.name, delay
                )
                self.internal_error = f"{type(error).__name__}: {error}"[:500]
                await self._stop_workers()
                self.monitor.forget()
                await self._report()
                await asyncio.sleep(delay)

    async def _loop(self) -> None:
        next_discovery = 0.0
        next_report = 0.0
        while True:
            ok = await self.monitor.probe()
            if ok:
                self.internal_error = ""
            change = self.monitor.observe(ok)
            if change == "healthy":
                logger.info("cluster %s is healthy (%s)", self.name, self.version)
                next_discovery = 0.0
                await self.monitor.publish()
            elif change == "unhealthy":
                logger.warning(
                    "cluster %s is unhealthy: %s; stopping its workers",
                    self.name,
                    self.health_message,
                )
                await self._stop_workers()
                await self.monitor.publish()
            if self.healthy and time.monotonic() >= next_discovery:
                try:
                    await self._reconcile_workers()
                    next_discovery = time.monotonic() + self.cluster_settings.discovery_interval
                except StorageError as error:  # removing a type's rows failed: next probe
                    logger.warning("cluster %s: storage failing: %s", self.name, error)
            # Report at most once per status interval, in short steps until the next probe.
            probe_at = time.monotonic() + self.cluster_settings.probe_interval * (
                0.8 + 0.4 * random.random()
            )
            while True:
                if time.monotonic() >= next_report:
                    await self._report()
                    next_report = time.monotonic() + self.cluster_settings.status_interval
                remaining = probe_at - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.sleep(min(remaining, self.cluster_settings.status_interval))

    # -- workers ------------------------------------------------------------------------------

    async def _reconcile_workers(self) -> None:
        targets = await self.negotiator.negotiate()
        if targets is None:
            return
        wanted = {(t.rtype.group, t.rtype.version, t.rtype.resource): t for t in targets}
        for key in list(self.workers.keys() - wanted.keys()):
            syncer, task = self.workers.pop(key)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            removed = await self.writer.delete_cluster(self.name, rtype=syncer.target.rtype)
            await self.catalog.forget(self.name, rtype=syncer.target.rtype)
            logger.info(
                "cluster %s: %s is no longer synced; removed %d rows",
                self.name,
                syncer.target.rtype,
                removed,
            )
        for key, target in wanted.items():
            if key in self.workers and self.workers[key][0].target != target:
                # the same type asked for differently (the Event kinds a new CRD adds): its
                # worker starts over, and its relist drops what the new target no longer keeps
                _, task = self.workers.pop(key)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if key not in self.workers:
                self._start_worker(key, target)
        await self.negotiator.publish(targets)

    def _start_worker(self, key: tuple[str, str, str], target: SyncTarget) -> None:
        syncer = ResourceSyncer(
            cluster=self.name,
            target=target,
            client=self.client,
            writer=self.writer,
            settings=self.settings,
            list_slots=self.list_slots,
        )
        task = asyncio.create_task(syncer.run(), name=f"sync {self.name}/{target.rtype}")
        self.workers[key] = (syncer, task)

    async def _stop_workers(self) -> None:
        workers, self.workers = self.workers, {}
        for _, task in workers.values():
            task.cancel()
        await asyncio.gather(*(task for _, task in workers.values()), return_exceptions=True)

    # -- status -------------------------------------------------------------------------------

    def state(self) -> rendering.SynchroState:
        return rendering.SynchroState(
            warnings=(*self.warnings, *self.negotiator.warnings),
            sync_error=self.negotiator.sync_error,
            internal_error=self.internal_error,
            healthy=self.healthy,
            health_message=self.health_message,
            running=bool(self.workers),
        )

    def status(self) -> dict[str, Any]:
        """PediaCluster.status as the original shapes it, plus per-resource progress."""
        return {
            "apiserver": self.access.host,
            "version": self.version,
            "conditions": [self._transitions.stamp(c) for c in rendering.conditions(self.state())],
            # Each open watch holds a connection to the member (lists and gets in flight are
            # in the metrics: they change too often for the status).
            "watches": self.client.open_watches,
            "syncResources": rendering.sync_resources(
                (syncer.target, syncer.status) for syncer, _ in self.workers.values()
            ),
        }

    async def _report(self) -> None:
        if self.report is None:
            return
        try:
            status = self.status()
            since = time.monotonic() - self._last_report_at
            if not rendering.news(
                status, self._last_report, since, self.cluster_settings.progress_interval
            ):
                return
            await self.report(status)
            self._last_report, self._last_report_at = status, time.monotonic()
        except Exception as error:  # a failed patch is retried at the next interval
            logger.warning("cluster %s: status report failed: %s", self.name, error)
