"""Kopf handlers: PediaCluster and ClusterSyncResources events become sync manager calls.

Installed as ``clusterpedia.operator.handlers``. This folder deliberately has no
``__init__.py``: ``operator`` is a standard-library module, and a regular package of that
name on ``sys.path`` would shadow it (see README, "Layout").

Design choices:

- Reconciliation runs on every PediaCluster event (``on.event``), and is idempotent: the
  manager restarts a cluster only when its configuration fingerprint changes. This needs no
  diff base, so no copy of a spec (which holds credentials) is kept in annotations.
- ``on.delete`` holds the finalizer ``clusterpedia.io/cluster-synchro-controller`` (the
  original's name) until every row of the cluster is deleted.
- Problems with a spec become conditions, never exceptions: no retry storm, other clusters
  unaffected.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from secrets import token_hex
from typing import Any

import kopf

from clusterpedia.kube.access import InvalidClusterConfig, access_from_spec
from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.kube.host import host_access, host_credentials
from clusterpedia.kube.pediaclusters import authentication_secrets, host_path, object_name
from clusterpedia.sharding.coordinator import ShardCoordinator, replica_identity
from clusterpedia.sharding.leases import LeaseStore
from clusterpedia.storage import Database
from clusterpedia.sync.cluster_synchro import ClusterSettings
from clusterpedia.sync.manager import SyncManager, fingerprint
from clusterpedia.sync.status import SynchroState, conditions
from clusterpedia.sync.worker import SyncSettings

GROUP, VERSION = "cluster.clusterpedia.io", "v1alpha2"
FINALIZER = "clusterpedia.io/cluster-synchro-controller"
CREDENTIAL_FIELDS = ("kubeconfig", "caData", "tokenData", "certData", "keyData")
MEMBER_LABEL = "sharding.clusterpedia.io/replica-of"  # value: the shard ("" = default)
SYNC_LABEL = "sharding.clusterpedia.io/sync-of"
registry = kopf.OperatorRegistry()
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


@kopf.on.startup(registry=registry)
async def startup(memo: Runtime, settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        ignored_fields=[("spec", name) for name in CREDENTIAL_FIELDS]
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    storage = Database(memo.config.storage_url, **memo.config.storage_options)
    await storage.migrate()
    memo.storage = storage
    memo.host = KubeClient(host_access(memo.config.kubeconfig))
    memo.manager = SyncManager(
        storage.writes,
        storage.catalog,
        report_for=lambda name: lambda status: memo.patch_status(name, status),
        settings=memo.config.sync,
        cluster_settings=memo.config.cluster,
    )
    if memo.config.sharding:
        memo.shards = _coordinator(memo)
        memo.shards.start()
        logger.info(
            "automatic sharding as replica %s (Leases in %s, %gs)",
            memo.config.identity,
            memo.config.namespace,
            memo.config.sharding_lease_duration,
        )


def _coordinator(memo: Runtime) -> ShardCoordinator:
    assert memo.host is not None and memo.manager is not None
    manager = memo.manager

    async def start(name: str) -> None:
        spec = memo.specs.get(name)
        if spec is not None:
            await memo.patch_status(name, {"syncedBy": memo.config.identity})
            await reconcile(memo, name, spec)

    namespace, config = memo.config.namespace, memo.config
    return ShardCoordinator(
        members=LeaseStore(memo.host, namespace, label=MEMBER_LABEL),
        syncs=LeaseStore(memo.host, namespace, label=SYNC_LABEL),
        identity=config.identity,
        shard=config.sharding_name,
        duration=config.sharding_lease_duration,
        start=start,
        stop=manager.stop,
    )


@kopf.on.login(registry=registry)
def login(memo: Runtime, **_: Any) -> kopf.ConnectionInfo:
    """Kopf talks to the host as our own host client does: one provider of both."""
    credentials = host_credentials(memo.config.kubeconfig)
    return kopf.ConnectionInfo(
        server=credentials.server,
        ca_data=credentials.ca_data,
        insecure=credentials.insecure,
        certificate_data=credentials.certificate_data,
        private_key_data=credentials.private_key_data,
        token=credentials.token,
        username=credentials.username,
        password=credentials.password,
    )


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: Runtime, **_: Any) -> None:
    if memo.shards is not None:
        await memo.shards.close()
    if memo.manager is not None:
        await memo.manager.stop_all()
    if memo.host is not None:
        await memo.host.close()
    if memo.storage is not None:
        await memo.storage.close()


async def _secrets(memo: Runtime, spec: Mapping[str, Any]) -> dict[str, bytes]:
    assert memo.host is not None
    return await authentication_secrets(memo.host, memo.config.namespace, spec)


async def _sync_resources(memo: Runtime, spec: Mapping[str, Any]) -> tuple[list[Any], list[str]]:
    """The cluster's own syncResources plus those of its ClusterSyncResources reference."""
    assert memo.host is not None
    entries, warnings = list(spec.get("syncResources") or []), []
    reference = spec.get("syncResourcesRefName")
    if reference:
        name = object_name(reference, what="syncResourcesRefName")
        try:
            shared = await memo.host.get(
                host_path("apis", GROUP, VERSION, "clustersyncresources", name)
            )
            entries += (shared.get("spec") or {}).get("syncResources") or []
        except KubeError as error:
            if error.status != 404:
                raise
            warnings.append(f"ClusterSyncResources {reference!r} not found")
    return entries, warnings


async def reconcile(memo: Runtime, name: str, spec: Mapping[str, Any]) -> None:
    """Make the running sync of ``name`` match ``spec``.

    Every event of the PediaCluster comes here, our own status patches included (several a
    minute per cluster while it syncs), so an unchanged configuration returns before building
    the member's access: its TLS context alone costs about 30 ms of CPU."""
    assert memo.manager is not None
    try:
        secrets = await _secrets(memo, spec)
        entries, warnings = await _sync_resources(memo, spec)
        # The fingerprint covers credentials, those in Secrets too (a rotated token restarts
        # the sync), without the manager ever storing them in the clear.
        encoded = {purpose: base64.b64encode(value).decode() for purpose, value in secrets.items()}
        config = fingerprint(dict(spec), entries, encoded)
        if memo.manager.runs(name, config):
            return
        access = access_from_spec(
            spec, secrets=secrets, allow_http_credentials=memo.config.allow_http_credentials
        )
    except InvalidClusterConfig as error:
        logger.warning("PediaCluster %s is invalid: %s", name, error)
        await memo.manager.stop(name)
        state = SynchroState(invalid_config=str(error))
        await memo.patch_status(name, {"conditions": conditions(state)})
        return
    await memo.manager.apply(
        name,
        access=access,
        sync_resources=entries,
        config_fingerprint=config,
        warnings=warnings,
        all_custom_resources=bool(spec.get("syncAllCustomResources")),
    )


def ours(spec: Mapping[str, Any], memo: Runtime, **_: Any) -> bool:
    """Whether this replica's shard syncs the PediaCluster (the original's rule)."""
    return str(spec.get("shardingName") or "") == memo.config.sharding_name


async def _claimed(memo: Runtime, name: str, status: Mapping[str, Any]) -> bool:
    """Take the PediaCluster for our shard, unless another shard still holds it: that one
    releases it first (status.shardingName back to null), so two never sync it at once."""
    owner = status.get("shardingName") or ""
    mine = memo.config.sharding_name
    if owner and owner != mine:
        logger.info("PediaCluster %s: waiting for shard %r to release it", name, owner)
        return False
    if owner != mine:
        await memo.patch_status(name, {"shardingName": mine or None})
    return True


async def _release(memo: Runtime, name: str, status: Mapping[str, Any], *, gone: bool) -> None:
    """Stop syncing a PediaCluster another shard owns now, and say it is free (unless it is
    being deleted: then there is nothing to hand over)."""
    assert memo.manager is not None
    if name in memo.manager.clusters:
        logger.info("PediaCluster %s moved to another shard; stopping its sync here", name)
        await memo.manager.stop(name)
    mine = memo.config.sharding_name
    if not gone and mine and status.get("shardingName") == mine:
        await memo.patch_status(name, {"shardingName": None})


async def _pediacluster_changed(
    memo: Runtime, name: str, spec: Mapping[str, Any], status: Mapping[str, Any], *, deleted: bool
) -> None:
    """One PediaCluster's state, whoever noticed it changed: released when another shard owns
    it, reconciled once claimed when ours."""
    shards = memo.shards
    if shards is not None and (deleted or not ours(spec, memo)):
        memo.specs.pop(name, None)
        await shards.forget(name)
    if not ours(spec, memo):
        await _release(memo, name, status, gone=deleted)
        return
    if deleted:
        return  # the delete handler below owns removal
    if not await _claimed(memo, name, status):
        return
    if shards is None:
        await reconcile(memo, name, spec)
        return
    memo.specs[name] = dict(spec)  # the coordinator starts it here if this replica gets it
    shards.add(name)
    if shards.syncs_here(name):
        await reconcile(memo, name, spec)


@kopf.on.event(GROUP, VERSION, "pediaclusters", registry=registry)
async def pediacluster_event(
    event: Mapping[str, Any],
    name: str,
    spec: Any,
    meta: Any,
    status: Any,
    memo: Runtime,
    **_: Any,
) -> None:
    deleted = event.get("type") == "DELETED" or bool(meta.get("deletionTimestamp"))
    await _pediacluster_changed(memo, name, dict(spec), dict(status or {}), deleted=deleted)


@kopf.on.delete(GROUP, VERSION, "pediaclusters", registry=registry, when=ours)
async def pediacluster_deleted(name: str, memo: Runtime, **_: Any) -> None:
    assert memo.manager is not None
    if memo.shards is not None:
        # Every replica of the shard runs this; rows go once the one that synced the
        # cluster has stopped (its Lease gone, or run out), or its writes could outlive them.
        memo.specs.pop(name, None)
        await memo.shards.forget(name)
        holder = memo.shards.synced_elsewhere(name)
        if holder:
            raise kopf.TemporaryError(f"waiting for replica {holder} to stop syncing", delay=2)
    await memo.manager.remove(name)


@kopf.on.event(GROUP, VERSION, "clustersyncresources", registry=registry)
async def sync_resources_changed(name: str, memo: Runtime, **_: Any) -> None:
    """Reconfigure every PediaCluster that references this ClusterSyncResources."""
    assert memo.host is not None
    clusters = await memo.host.get(f"/apis/{GROUP}/{VERSION}/pediaclusters")
    for item in clusters.get("items") or []:
        spec = item.get("spec") or {}
        if spec.get("syncResourcesRefName") == name:
            await _pediacluster_changed(
                memo,
                item["metadata"]["name"],
                spec,
                item.get("status") or {},
                deleted=bool(item["metadata"].get("deletionTimestamp")),
            )
