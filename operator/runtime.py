"""The operator's configuration and shared state, and what it is composed of: the storage,
the host client, the sync manager and (with ``--sharding``) the shard coordinator.

Installed as ``clusterpedia.operator.runtime`` (see ``handlers.py`` on why this folder has no
``__init__.py``).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from secrets import token_hex
from typing import Any

from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.kube.host import host_access
from clusterpedia.sharding.coordinator import ShardCoordinator, replica_identity
from clusterpedia.storage import Database
from clusterpedia.sync.cluster_synchro import ClusterSettings
from clusterpedia.sync.manager import SyncManager
from clusterpedia.sync.worker import SyncSettings

GROUP, VERSION = "cluster.clusterpedia.io", "v1alpha2"
logger = logging.getLogger(__name__)


@dataclass
class OperatorConfig:
    """What the operator needs from the command line."""

    storage_url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)  # Database keywords
    kubeconfig: str | None = None
    namespace: str = field(
        default_factory=lambda: os.environ.get("CLUSTERPEDIA_NAMESPACE", "clusterpedia-system")
    )
    sync: SyncSettings = field(default_factory=SyncSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    allow_http_credentials: bool = False  # send member credentials over plain HTTP
    # The original's --sharding-name: only PediaClusters whose spec.shardingName equals it
    # ("" = those without one) are synced here; status.shardingName names the owner.
    sharding_name: str = ""
    # --sharding: the shard's live replicas divide its clusters (clusterpedia/sharding).
    sharding: bool = False
    sharding_lease_duration: float = 15.0
    identity: str = field(
        default_factory=lambda: replica_identity(
            os.environ.get("POD_NAME") or socket.gethostname(), token_hex(3)
        )
    )
    import_interval: float = 10.0  # seconds between import policy rounds (import_policies.py)


class Runtime:
    """The operator's shared state (one object for every handler: ``__copy__`` returns self)."""

    def __init__(self, config: OperatorConfig):
        self.config = config
        self.host: KubeClient | None = None
        self.manager: SyncManager | None = None
        self.storage: Database | None = None
        self.shards: ShardCoordinator | None = None  # with --sharding
        self.specs: dict[str, dict[str, Any]] = {}  # the shard's PediaClusters, for shards

    def __copy__(self) -> Runtime:
        return self

    def status_path(self, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/pediaclusters/{name}/status"

    async def patch_status(self, name: str, status: Mapping[str, Any]) -> None:
        assert self.host is not None
        try:
            await self.host.patch(self.status_path(name), {"status": status})
        except KubeError as error:
            if error.status != 404:  # deleted meanwhile
                raise

    async def open(self) -> None:
        """Compose the operator's parts (the shard coordinator is ``shards.py``'s)."""
        storage = Database(self.config.storage_url, **self.config.storage_options)
        await storage.migrate()
        self.storage = storage
        self.host = KubeClient(host_access(self.config.kubeconfig))
        self.manager = SyncManager(
            storage.writes,
            storage.catalog,
            report_for=lambda name: lambda status: self.patch_status(name, status),
            settings=self.config.sync,
            cluster_settings=self.config.cluster,
        )

    async def close(self) -> None:
        if self.shards is not None:
            await self.shards.close()
        if self.manager is not None:
            await self.manager.stop_all()
        if self.host is not None:
            await self.host.close()
        if self.storage is not None:
            await self.storage.close()
