"""Kopf handlers: PediaCluster and ClusterSyncResources events become sync manager calls
(what the operator is made of is ``runtime.py``; which clusters this replica syncs,
``shards.py``).

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
from collections.abc import Mapping
from typing import Any

import kopf

from clusterpedia.kube.access import InvalidClusterConfig, access_from_spec
from clusterpedia.kube.client import KubeError
from clusterpedia.kube.host import host_credentials
from clusterpedia.kube.pediaclusters import authentication_secrets, host_path, object_name
from clusterpedia.sync.manager import fingerprint
from clusterpedia.sync.status import SynchroState, conditions

from .runtime import GROUP, VERSION, Runtime
from .shards import claimed, coordinator_for, ours, release

FINALIZER = "clusterpedia.io/cluster-synchro-controller"
CREDENTIAL_FIELDS = ("kubeconfig", "caData", "tokenData", "certData", "keyData")
registry = kopf.OperatorRegistry()
logger = logging.getLogger(__name__)


@kopf.on.startup(registry=registry)
async def startup(memo: Runtime, settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        ignored_fields=[("spec", name) for name in CREDENTIAL_FIELDS]
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300

    async def start(name: str) -> None:
        spec = memo.specs.get(name)
        if spec is not None:
            await memo.patch_status(name, {"syncedBy": memo.config.identity})
            await reconcile(memo, name, spec)

    await memo.open()
    if memo.config.sharding:
        memo.shards = coordinator_for(memo, start=start)
        memo.shards.start()


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
    await memo.close()


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
        await release(memo, name, status, gone=deleted)
        return
    if deleted:
        return  # the delete handler below owns removal
    if not await claimed(memo, name, status):
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
