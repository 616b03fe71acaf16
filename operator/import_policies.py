"""Kopf daemons for the original's import policies: a ClusterImportPolicy keeps one
PediaClusterLifecycle per selected source object in the host, and each lifecycle keeps its
PediaCluster (created once its creationCondition holds; afterwards only the credentials are
updated, as the original does; deleted with the lifecycle, which goes with its source).

Both reconcile every ``import_interval`` seconds (a daemon per object, stopped with it), and
report what they did in ``status.conditions``. Only the default shard runs them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from clusterpedia.importing import (
    POLICY_GROUP,
    POLICY_LABEL,
    POLICY_VERSION,
    PolicyError,
    Reference,
    auth_changes,
    condition,
    lifecycle_for,
    pediacluster_spec,
    policy_source,
    references_of,
    stale,
)
from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.kube.pediaclusters import host_path
from clusterpedia.operator.handlers import GROUP, VERSION, Runtime, registry

logger = logging.getLogger(__name__)
_LIFECYCLES = f"/apis/{POLICY_GROUP}/{POLICY_VERSION}/pediaclusterlifecycles"
_POLICIES = f"/apis/{POLICY_GROUP}/{POLICY_VERSION}/clusterimportpolicies"
_PEDIACLUSTERS = f"/apis/{GROUP}/{VERSION}/pediaclusters"


# A deleted object's daemon may be mid-round: Kopf re-checks that it exited every
# cancellation_polling seconds (60 by default, which held a deletion for a minute), and
# cancels it after cancellation_timeout.
STOP_POLLING, STOP_TIMEOUT = 0.5, 10.0


def _default_shard(memo: Runtime, **_: Any) -> bool:
    return memo.config.sharding_name == ""


def _path(group: str, version: str, resource: str, namespace: str = "", name: str = "") -> str:
    """A host API path; each part quoted as one segment (names come from templates)."""
    parts = ["apis", group, version] if group else ["api", version]
    if namespace:
        parts += ["namespaces", namespace]
    return host_path(*parts, resource, *([name] if name else []))


async def _preferred_version(host: KubeClient, group: str) -> str:
    if not group:
        return "v1"
    found = await host.get(f"/apis/{group}")
    return str((found.get("preferredVersion") or {}).get("version") or "")


async def _status(host: KubeClient, path: str, conditions: list[dict[str, str]]) -> None:
    try:
        await host.patch(f"{path}/status", {"status": {"conditions": conditions}})
    except KubeError as error:
        if error.status != 404:
            logger.warning("%s: status not written: %s", path, error)


# -- ClusterImportPolicy -----------------------------------------------------------------------


async def reconcile_policy(host: KubeClient, policy: Mapping[str, Any]) -> list[dict[str, str]]:
    """Make the policy's lifecycles match its selected source objects; its conditions."""
    name = str((policy.get("metadata") or {}).get("name", ""))
    try:
        source = policy_source(policy.get("spec") or {})
    except PolicyError as error:
        return [condition("Validated", False, "InvalidPolicy", str(error))]
    validated = condition("Validated", True, "Validated")
    try:
        version = source.versions[0] if source.versions else ""
        version = version or await _preferred_version(host, source.group)
        listed = await host.get(_path(source.group, version, source.resource))
    except KubeError as error:
        return [validated, condition("Reconciling", False, "SourceUnavailable", str(error))]
    problems: list[str] = []
    wanted: dict[str, dict[str, Any]] = {}
    for obj in listed.get("items") or ():
        try:
            lifecycle = lifecycle_for(policy, source, version, obj)
        except PolicyError as error:
            problems.append(f"{(obj.get('metadata') or {}).get('name')}: {error}")
            continue
        if lifecycle is not None:
            wanted[lifecycle["metadata"]["name"]] = lifecycle
    existing = await host.get(_LIFECYCLES, params={"labelSelector": f"{POLICY_LABEL}={name}"})
    have = {item["metadata"]["name"]: item for item in existing.get("items") or ()}
    for lifecycle_name, lifecycle in wanted.items():
        current = have.get(lifecycle_name)
        try:
            if current is None:
                await host.post(_LIFECYCLES, lifecycle)
                logger.info("policy %s: lifecycle %s created", name, lifecycle_name)
            elif current.get("spec") != lifecycle["spec"]:
                await host.patch(f"{_LIFECYCLES}/{lifecycle_name}", {"spec": lifecycle["spec"]})
        except KubeError as error:
            problems.append(f"{lifecycle_name}: {error}")
    for gone in stale(list(have), list(wanted)):
        try:
            await host.delete(f"{_LIFECYCLES}/{gone}")
            logger.info("policy %s: lifecycle %s deleted (its source went)", name, gone)
        except KubeError as error:
            if error.status != 404:
                problems.append(f"{gone}: {error}")
    if problems:
        return [validated, condition("Reconciling", False, "Failed", "; ".join(problems))]
    return [validated, condition("Reconciling", True, "Reconciled", f"{len(wanted)} lifecycles")]


@kopf.daemon(
    POLICY_GROUP,
    POLICY_VERSION,
    "clusterimportpolicies",
    registry=registry,
    when=_default_shard,
    cancellation_polling=STOP_POLLING,
    cancellation_timeout=STOP_TIMEOUT,
)
async def policy_daemon(body: Any, name: str, memo: Runtime, stopped: Any, **_: Any) -> None:
    await _rounds(memo, stopped, f"{_POLICIES}/{name}", lambda host: reconcile_policy(host, body))


Round = Callable[[KubeClient], Awaitable[list[dict[str, str]]]]


async def _rounds(memo: Runtime, stopped: Any, path: str, round_: Round) -> None:
    """A daemon's life: a round every import_interval until its object goes; each round's
    conditions go to the object's status. A host failure is a condition and a retry, never
    the daemon's end."""
    assert memo.host is not None
    while not stopped:
        try:
            conditions = await round_(memo.host)
        except (TimeoutError, KubeError) as error:
            logger.warning("%s: %s", path, error)
            conditions = [condition("Reconciling", False, "HostUnavailable", str(error))]
        if conditions:
            await _status(memo.host, path, conditions)
        await stopped.wait(memo.config.import_interval)


# -- PediaClusterLifecycle ---------------------------------------------------------------------


async def _referenced(host: KubeClient, reference: Reference) -> Any:
    version = reference.version or await _preferred_version(host, reference.group)
    return await host.get(
        _path(reference.group, version, reference.resource, reference.namespace, reference.name)
    )


async def reconcile_lifecycle(
    host: KubeClient, lifecycle: Mapping[str, Any]
) -> list[dict[str, str]]:
    """Keep the lifecycle's PediaCluster as its source and references say; its conditions."""
    name = str((lifecycle.get("metadata") or {}).get("name", ""))
    spec = lifecycle.get("spec") or {}
    source = spec.get("source") or {}
    try:
        obj = await host.get(
            _path(
                str(source.get("group") or ""),
                str(source.get("version") or "v1"),
                str(source.get("resource", "")),
                str(source.get("namespace") or ""),
                str(source.get("name", "")),
            )
        )
    except KubeError as error:
        if error.status == 404:  # its source went: so does the lifecycle, and its cluster
            await host.delete(f"{_LIFECYCLES}/{name}")
            return []
        raise
    try:
        references = {
            reference.key: await _referenced(host, reference)
            for reference in references_of(spec, obj)
        }
        wanted = pediacluster_spec(spec, obj, references)
    except PolicyError as error:
        return [condition("Created", False, "InvalidTemplate", str(error))]
    except KubeError as error:
        return [condition("Created", False, "ReferenceUnavailable", str(error))]
    try:
        current = await host.get(f"{_PEDIACLUSTERS}/{name}")
    except KubeError as error:
        if error.status != 404:
            raise
        current = None
    if current is None:
        if wanted is None:
            return [condition("Created", False, "WaitingForCondition", "creationCondition")]
        await host.post(_PEDIACLUSTERS, _pediacluster(lifecycle, wanted))
        logger.info("lifecycle %s: PediaCluster created", name)
        return [condition("Created", True, "Created")]
    if wanted is not None:
        changes = auth_changes(current.get("spec") or {}, wanted)
        if changes:
            await host.patch(f"{_PEDIACLUSTERS}/{name}", {"spec": changes})
            logger.info("lifecycle %s: PediaCluster credentials updated", name)
            return [condition("Created", True, "Created"), condition("Updating", True, "Updated")]
    return [condition("Created", True, "Created")]


def _pediacluster(lifecycle: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    metadata = lifecycle.get("metadata") or {}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PediaCluster",
        "metadata": {
            "name": metadata.get("name"),
            "ownerReferences": [
                {
                    "apiVersion": f"{POLICY_GROUP}/{POLICY_VERSION}",
                    "kind": "PediaClusterLifecycle",
                    "name": metadata.get("name"),
                    "uid": metadata.get("uid"),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": dict(spec),
    }


@kopf.daemon(
    POLICY_GROUP,
    POLICY_VERSION,
    "pediaclusterlifecycles",
    registry=registry,
    when=_default_shard,
    cancellation_polling=STOP_POLLING,
    cancellation_timeout=STOP_TIMEOUT,
)
async def lifecycle_daemon(body: Any, name: str, memo: Runtime, stopped: Any, **_: Any) -> None:
    path = f"{_LIFECYCLES}/{name}"
    await _rounds(memo, stopped, path, lambda host: reconcile_lifecycle(host, body))


@kopf.on.delete(
    POLICY_GROUP, POLICY_VERSION, "pediaclusterlifecycles", registry=registry, when=_default_shard
)
async def lifecycle_deleted(name: str, memo: Runtime, **_: Any) -> None:
    """Its PediaCluster goes too (owner references say so; a host without a garbage
    collector, such as a bare kube-apiserver, needs it said)."""
    assert memo.host is not None
    try:
        await memo.host.delete(f"{_PEDIACLUSTERS}/{name}")
        logger.info("lifecycle %s deleted: its PediaCluster is deleted", name)
    except KubeError as error:
        if error.status != 404:
            raise


@kopf.on.delete(
    POLICY_GROUP, POLICY_VERSION, "clusterimportpolicies", registry=registry, when=_default_shard
)
async def policy_deleted(name: str, memo: Runtime, **_: Any) -> None:
    """Its lifecycles go too, and with them their PediaClusters (said here for a host without
    a garbage collector, as for lifecycles)."""
    assert memo.host is not None
    owned = await memo.host.get(_LIFECYCLES, params={"labelSelector": f"{POLICY_LABEL}={name}"})
    for item in owned.get("items") or ():
        try:
            await memo.host.delete(f"{_LIFECYCLES}/{item['metadata']['name']}")
        except KubeError as error:
            if error.status != 404:
                raise
