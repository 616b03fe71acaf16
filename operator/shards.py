"""Which PediaClusters this replica syncs: the original's ``--sharding-name`` rule (a shard
claims a PediaCluster in ``status.shardingName`` and releases it before another takes it) and,
with ``--sharding``, the coordinator that divides a shard's clusters among its replicas."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from clusterpedia.sharding.coordinator import ShardCoordinator
from clusterpedia.sharding.leases import LeaseStore

from .runtime import Runtime

MEMBER_LABEL = "sharding.clusterpedia.io/replica-of"  # value: the shard ("" = default)
SYNC_LABEL = "sharding.clusterpedia.io/sync-of"
logger = logging.getLogger(__name__)


def coordinator_for(memo: Runtime, *, start: Callable[[str], Awaitable[None]]) -> ShardCoordinator:
    """The shard's coordinator: Leases in the operator's namespace; ``start`` syncs a cluster
    this replica gets, the manager stops one it loses."""
    assert memo.host is not None and memo.manager is not None
    manager = memo.manager

    namespace, config = memo.config.namespace, memo.config
    logger.info(
        "automatic sharding as replica %s (Leases in %s, %gs)",
        config.identity, namespace, config.sharding_lease_duration,
    )  # fmt: skip
    return ShardCoordinator(
        members=LeaseStore(memo.host, namespace, label=MEMBER_LABEL),
        syncs=LeaseStore(memo.host, namespace, label=SYNC_LABEL),
        identity=config.identity,
        shard=config.sharding_name,
        duration=config.sharding_lease_duration,
        start=start,
        stop=manager.stop,
    )


def ours(spec: Mapping[str, Any], memo: Runtime, **_: Any) -> bool:
    """Whether this replica's shard syncs the PediaCluster (the original's rule)."""
    return str(spec.get("shardingName") or "") == memo.config.sharding_name


async def claimed(memo: Runtime, name: str, status: Mapping[str, Any]) -> bool:
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


async def release(memo: Runtime, name: str, status: Mapping[str, Any], *, gone: bool) -> None:
    """Stop syncing a PediaCluster another shard owns now, and say it is free (unless it is
    being deleted: then there is nothing to hand over)."""
    assert memo.manager is not None
    if name in memo.manager.clusters:
        logger.info("PediaCluster %s moved to another shard; stopping its sync here", name)
        await memo.manager.stop(name)
    mine = memo.config.sharding_name
    if not gone and mine and status.get("shardingName") == mine:
        await memo.patch_status(name, {"shardingName": None})
