"""The set of clusters this process syncs: start, reconfigure, stop, purge.

The operator translates PediaCluster events into these calls; nothing here knows Kopf.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from clusterpedia.kube.access import MemberAccess, redact_url
from clusterpedia.storage import Catalog, ObjectWrites
from clusterpedia.sync.cluster_synchro import ClusterSettings, ClusterSynchro, StatusReport
from clusterpedia.sync.worker import SyncSettings

logger = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """Identifies a configuration: same fingerprint, nothing to restart."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


class SyncManager:
    """Cluster name -> its running :class:`ClusterSynchro`."""

    def __init__(
        self,
        writer: ObjectWrites,
        catalog: Catalog,
        *,
        report_for: Callable[[str], StatusReport | None] = lambda name: None,
        settings: SyncSettings | None = None,
        cluster_settings: ClusterSettings | None = None,
    ):
        self.writer = writer
        self.catalog = catalog
        self.report_for = report_for
        self.settings = settings or SyncSettings()
        self.cluster_settings = cluster_settings or ClusterSettings()
        self.clusters: dict[str, tuple[str, ClusterSynchro]] = {}
        # Shared by every cluster: the lists running at once in this process.
        self.list_slots = asyncio.Semaphore(self.settings.process_list_concurrency)

    def runs(self, name: str, config_fingerprint: str) -> bool:
        """True if ``name`` already runs with this configuration."""
        current = self.clusters.get(name)
        return current is not None and current[0] == config_fingerprint

    async def apply(
        self,
        name: str,
        *,
        access: MemberAccess,
        sync_resources: Sequence[Mapping[str, Any]],
        config_fingerprint: str,
        warnings: Sequence[str] = (),
        all_custom_resources: bool = False,
    ) -> bool:
        """Run ``name`` with this configuration; True if it (re)started."""
        if self.runs(name, config_fingerprint):
            return False
        current = self.clusters.get(name)
        if current is not None:
            logger.info("cluster %s changed; restarting its sync", name)
            await current[1].stop()
        synchro = ClusterSynchro(
            name=name,
            access=access,
            sync_resources=sync_resources,
            writer=self.writer,
            catalog=self.catalog,
            report=self.report_for(name),
            settings=self.settings,
            cluster_settings=self.cluster_settings,
            warnings=warnings,
            all_custom_resources=all_custom_resources,
            process_list_slots=(self.list_slots,),
        )
        self.clusters[name] = (config_fingerprint, synchro)
        synchro.start()
        logger.info("cluster %s: sync started against %s", name, redact_url(access.server))
        return True

    async def stop(self, name: str) -> None:
        """Stop syncing ``name``; its rows stay."""
        current = self.clusters.pop(name, None)
        if current is not None:
            await current[1].stop()

    async def remove(self, name: str) -> int:
        """Stop syncing ``name`` and delete all of its rows; returns how many."""
        await self.stop(name)
        removed = await self.writer.delete_cluster(name)
        await self.catalog.forget(name)
        logger.info("cluster %s removed with %d rows", name, removed)
        return removed

    async def stop_all(self) -> None:
        for name in list(self.clusters):
            await self.stop(name)
