"""Everything one member cluster runs: health probe, discovery, one worker per resource type,
and the status that describes them.

The probe decides: two failed probes stop the workers (rows are kept) and mark the cluster
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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clusterpedia.kube.access import MemberAccess
from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.kube.discovery import (
    SyncResourcesError,
    SyncTarget,
    discover,
    is_builtin_group,
    resolve_sync_resources,
)
from clusterpedia.storage import Catalog, ObjectWrites, PrinterColumn, StorageError, SyncedType
from clusterpedia.sync.metrics import MEMBER_REQUESTS, MEMBER_WATCHES
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


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_PROGRESS = ("objects", "lastEventTime")  # the fields of a syncCondition that only count


def _without_progress(status: dict[str, Any]) -> dict[str, Any]:
    return {
        **status,
        "watches": None,
        "syncResources": [
            {
                **group,
                "resources": [
                    {
                        **resource,
                        "syncConditions": [
                            {k: v for k, v in c.items() if k not in _PROGRESS}
                            for c in resource["syncConditions"]
                        ],
                    }
                    for resource in group["resources"]
                ],
            }
            for group in status.get("syncResources") or []
        ],
    }


def news(
    status: dict[str, Any], last: dict[str, Any] | None, since: float, progress_interval: float
) -> bool:
    """Whether ``status`` is worth a patch, ``since`` seconds after ``last`` was reported: any
    change but progress at once, progress alone once per ``progress_interval``."""
    if status == last:
        return False
    if last is None or since >= progress_interval:
        return True
    return _without_progress(status) != _without_progress(last)


def condition(kind: str, status: bool | None, reason: str, message: str = "") -> dict[str, str]:
    return {
        "type": kind,
        "status": "Unknown" if status is None else ("True" if status else "False"),
        "reason": reason,
        "message": message,
    }


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
    ):
        self.name = name
        self.all_custom_resources = all_custom_resources
        self.access = access
        self.sync_resources = list(sync_resources)
        self.writer = writer
        self.catalog = catalog
        self.report = report
        self.settings = settings or SyncSettings()
        self.cluster_settings = cluster_settings or ClusterSettings()
        self.client = KubeClient(
            access,
            request_timeout=self.settings.request_timeout,
            watch_idle_timeout=self.settings.watch_idle_timeout,
            qps=self.settings.kube_api_qps,
            burst=self.settings.kube_api_burst,
        )
        self.list_slots = (asyncio.Semaphore(self.settings.list_concurrency), *process_list_slots)
        self.workers: dict[tuple[str, str, str], tuple[ResourceSyncer, asyncio.Task[None]]] = {}
        self.healthy: bool | None = None
        self.health_message = ""
        self.version = ""
        self.sync_error = ""
        self.internal_error = ""  # why the loop last failed, until a probe succeeds again
        self.discovery_warnings: list[str] = []
        self.warnings = [*warnings, *access.warnings]
        if access.insecure:
            self.warnings.append(
                "no caData: TLS to the member is not verified (as the original does)"
            )
        self._task: asyncio.Task[None] | None = None
        self._published: list[SyncedType] | None = None
        self._last_report: dict[str, Any] | None = None
        self._last_report_at = 0.0
        self._last_transitions: dict[str, tuple[str, str]] = {}

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
        delay = 1.0
        while True:
            try:
                await self._loop()
            except Exception as error:
                logger.exception(
                    "cluster %s: its sync loop failed; restarting it in %.0fs", self.name, delay
                )
                self.internal_error = f"{type(error).__name__}: {error}"[:500]
                await self._stop_workers()
                self.healthy = None
                await self._report()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _loop(self) -> None:
        failures = 0
        next_discovery = 0.0
        next_report = 0.0
        while True:
            ok = await self._probe()
            failures = 0 if ok else failures + 1
            if ok:
                self.internal_error = ""
            if ok and self.healthy is not True:
                logger.info("cluster %s is healthy (%s)", self.name, self.version)
                self.healthy, next_discovery = True, 0.0
                await self._publish_health()
            elif (
                not ok
                and failures >= self.cluster_settings.failures_to_unhealthy
                and self.healthy is not False
            ):
                logger.warning(
                    "cluster %s is unhealthy: %s; stopping its workers",
                    self.name,
                    self.health_message,
                )
                self.healthy = False
                await self._stop_workers()
                await self._publish_health()
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

    async def _probe(self) -> bool:
        try:
            status, body = await self.client.get_text("/readyz")
            if status == 404:
                status, body = await self.client.get_text("/healthz")
            if status != 200:
                self.health_message = f"/readyz answered {status}: {body.strip()[:200]}"
                return False
            if not self.version:
                self.version = str((await self.client.get("/version")).get("gitVersion", ""))
            self.health_message = ""
            return True
        except KubeError as error:
            self.health_message = str(error)
            return False

    # -- workers ------------------------------------------------------------------------------

    async def _reconcile_workers(self) -> None:
        try:
            targets, warnings = resolve_sync_resources(
                await discover(self.client),
                self.sync_resources,
                all_custom_resources=self.all_custom_resources,
            )
        except SyncResourcesError as error:
            self.sync_error = str(error)
            return
        except KubeError as error:
            logger.warning("cluster %s: discovery failed: %s", self.name, error)
            return
        self.sync_error = ""
        self.discovery_warnings = warnings
        wanted = {(t.rtype.group, t.rtype.version, t.rtype.resource): t for t in targets}
        for key in list(self.workers.keys() - wanted.keys()):
            syncer, task = self.workers.pop(key)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            removed = await self.writer.delete_cluster(self.name, rtype=syncer.target.rtype)
            logger.info(
                "cluster %s: %s is no longer synced; removed %d rows",
                self.name,
                syncer.target.rtype,
                removed,
            )
        for key, target in wanted.items():
            if key not in self.workers:
                self._start_worker(key, target)
        await self._publish_types(targets)

    async def _publish_health(self) -> None:
        """Record the health for every replica's API (the warning on stale clusters)."""
        try:
            await self.catalog.set_health(
                self.name,
                healthy=bool(self.healthy),
                reason="" if self.healthy else self.health_message[:500],
            )
        except Exception as error:  # the next health change records it again
            logger.warning("cluster %s: could not record its health: %s", self.name, error)

    async def _publish_types(self, targets: Sequence[SyncTarget]) -> None:
        """Record what this cluster syncs, for every replica's discovery."""
        columns = await self._printer_columns(targets)
        types = [
            SyncedType(
                cluster=self.name,
                group=t.rtype.group,
                version=t.rtype.version,
                resource=t.rtype.resource,
                kind=t.rtype.kind,
                namespaced=t.namespaced,
                singular=t.singular,
                short_names=t.short_names,
                categories=t.categories,
                printer_columns=columns.get((t.rtype.group, t.rtype.version, t.rtype.resource), ()),
            )
            for t in targets
        ]
        if types == self._published:
            return
        try:
            await self.catalog.replace(self.name, types)
            self._published = types
        except Exception as error:  # retried at the next discovery round
            logger.warning("cluster %s: could not record its resource types: %s", self.name, error)

    async def _printer_columns(
        self, targets: Sequence[SyncTarget]
    ) -> dict[tuple[str, str, str], tuple[PrinterColumn, ...]]:
        """Each synced custom resource's additionalPrinterColumns for its synced version, read
        from one list of the member's CRDs (built-in kinds and aggregated APIs have none)."""
        if all(is_builtin_group(t.rtype.group) for t in targets):
            return {}
        try:
            crds = await self.client.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        except KubeError:
            return {}  # not readable with these credentials: default columns
        return printer_columns(crds.get("items") or ())

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

    def status(self) -> dict[str, Any]:
        """PediaCluster.status as the original shapes it, plus per-resource progress."""
        validated = condition(
            "Validated", True, "Validated", "; ".join([*self.warnings, *self.discovery_warnings])
        )
        if self.internal_error:
            running = condition("SynchroRunning", False, "InternalError", self.internal_error)
        elif self.sync_error:
            running = condition("SynchroRunning", False, "InvalidSyncResources", self.sync_error)
        elif self.healthy is False:
            running = condition(
                "SynchroRunning", False, "Pending", "waiting for the cluster to be healthy"
            )
        elif self.workers:
            running = condition("SynchroRunning", True, "Running")
        else:
            running = condition("SynchroRunning", False, "WaitInit")
        health = {
            None: condition("ClusterHealthy", None, "MonitorStop", "not probed yet"),
            True: condition("ClusterHealthy", True, "Healthy"),
            False: condition("ClusterHealthy", False, "Unhealthy", self.health_message),
        }[self.healthy]
        if self.sync_error:
            validated = condition("Validated", False, "InvalidSyncResources", self.sync_error)
        not_true = [c for c in (validated, running, health) if c["status"] != "True"]
        ready = (
            condition("Ready", True, "Ready")
            if not not_true
            else condition(
                "Ready",
                False,
                "NotReady",
                "{type} condition is {status}, reason is {reason}".format(**not_true[0]),
            )
        )
        conditions = [self._stamp(c) for c in (validated, running, health, ready)]
        return {
            "apiserver": self.access.host,
            "version": self.version,
            "conditions": conditions,
            # Each open watch holds a connection to the member (lists and gets in flight are
            # in the metrics: they change too often for the status).
            "watches": self.client.open_watches,
            "syncResources": self._sync_resources_status(),
        }

    def _stamp(self, cond: dict[str, str]) -> dict[str, str]:
        """lastTransitionTime changes only when status or reason does."""
        previous = self._last_transitions.get(cond["type"])
        if previous is None or previous[0] != f"{cond['status']}/{cond['reason']}":
            previous = (f"{cond['status']}/{cond['reason']}", _now())
            self._last_transitions[cond["type"]] = previous
        return {**cond, "lastTransitionTime": previous[1]}

    def _sync_resources_status(self) -> list[dict[str, Any]]:
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        for syncer, _ in self.workers.values():
            rtype, status = syncer.target.rtype, syncer.status
            phase, reason, message = status.condition()
            resource = groups.setdefault(rtype.group, {}).setdefault(
                rtype.resource,
                {
                    "name": rtype.resource,
                    "kind": rtype.kind,
                    "namespaced": syncer.target.namespaced,
                    "syncConditions": [],
                },
            )
            resource["syncConditions"].append(
                {
                    "version": rtype.version,
                    "storageVersion": rtype.version,
                    "status": phase,
                    "reason": reason,
                    "message": message[:500],
                    "initialListPhase": status.initial_list_phase,
                    "objects": status.count,
                    "lastEventTime": (
                        datetime.fromtimestamp(status.last_event_time, UTC).strftime(
                            "%Y-%m-%dT%H:%M:%SZ"
                        )
                        if status.last_event_time
                        else None
                    ),
                }
            )
        return [
            {"group": group, "resources": sorted(resources.values(), key=lambda r: r["name"])}
            for group, resources in sorted(groups.items())
        ]

    async def _report(self) -> None:
        if self.report is None:
            return
        try:
            status = self.status()
            since = time.monotonic() - self._last_report_at
            if not news(status, self._last_report, since, self.cluster_settings.progress_interval):
                return
            await self.report(status)
            self._last_report, self._last_report_at = status, time.monotonic()
        except Exception as error:  # a failed patch is retried at the next interval
            logger.warning("cluster %s: status report failed: %s", self.name, error)


def printer_columns(
    crds: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str, str], tuple[PrinterColumn, ...]]:
    """(group, version, plural) -> the additionalPrinterColumns of that CRD version."""
    columns: dict[tuple[str, str, str], tuple[PrinterColumn, ...]] = {}
    for crd in crds:
        spec = crd.get("spec") or {}
        plural = (spec.get("names") or {}).get("plural", "")
        for version in spec.get("versions") or ():
            columns[(spec.get("group", ""), version.get("name", ""), plural)] = tuple(
                PrinterColumn(
                    name=str(c.get("name", "")),
                    type=str(c.get("type", "string")),
                    json_path=str(c.get("jsonPath", "")),
                    description=str(c.get("description", "")),
                    format=str(c.get("format", "")),
                    priority=int(c.get("priority", 0)),
                )
                for c in version.get("additionalPrinterColumns") or ()
                if c.get("name") and c.get("jsonPath")
            )
    return columns
