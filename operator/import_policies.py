"""Kopf daemons for the original's import policies: a ClusterImportPolicy keeps one
PediaClusterLifecycle per selected source object in the host, and each lifecycle keeps its
PediaCluster (created once its creationCondition holds; afterwards only the credentials are
updated, as the original does; deleted with the lifecycle, which goes with its source).

Both reconcile every ``import_interval`` seconds (a daemon per object, stopped with it), and
report what they did in ``status.conditions``. Only the default shard runs them.

A policy owns what it creates and touches nothing else: a lifecycle is its policy's when the
policy is its controller (owner reference by UID), a PediaCluster is its lifecycle's likewise.
A rendered name that is taken by an object it does not own, or that two sources render, is
refused in the status and changes nothing; deletion removes only what is owned. Templates are
rendered on a worker thread, within their budget, so the event loop (every member's sync) goes
on while one renders.
"""

from __future__ import annotations

import asyncio
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
    Source,
    auth_changes,
    condition,
    lifecycle_for,
    pediacluster_spec,
    policy_source,
    references_of,
    stale,
)
from clusterpedia.kube.access import InvalidClusterConfig
from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.kube.pediaclusters import host_path

from .handlers import registry
from .runtime import GROUP, VERSION, Runtime

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
    """A host API path; each part quoted as one segment (names come from templates); a dot
    or empty segment is a :class:`PolicyError`."""
    parts = ["apis", group, version] if group else ["api", version]
    if namespace:
        parts += ["namespaces", namespace]
    try:
        return host_path(*parts, resource, *([name] if name else []))
    except InvalidClusterConfig as error:
        raise PolicyError(str(error), reason="InvalidName") from None


def owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    """Whether ``owner`` (its metadata's UID) is ``obj``'s controller."""
    uid = (owner.get("metadata") or {}).get("uid")
    return bool(uid) and any(
        reference.get("uid") == uid and reference.get("controller")
        for reference in (obj.get("metadata") or {}).get("ownerReferences") or ()
    )


def _source_of(lifecycle: Mapping[str, Any]) -> tuple[str, str]:
    source = (lifecycle.get("spec") or {}).get("source") or {}
    return str(source.get("namespace") or ""), str(source.get("name") or "")


def _refused(error: KubeError) -> str:
    """A host's refusal of a rendered object, by code and reason only: its message may quote
    the rendered values (a validation error quotes the invalid value)."""
    return f"the host refused it: {error.status} {error.reason or 'Unknown'}"


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


def wanted_lifecycles(
    policy: Mapping[str, Any],
    source: Source,
    version: str,
    items: list[Any],
    have: Mapping[str, Any],
) -> tuple[dict[str, dict[str, Any]], set[str], list[str]]:
    """The lifecycles the policy wants for its source objects, the names it must leave as they
    are, and what it refuses. Two sources that render one name are refused both, unless the
    policy's existing lifecycle of that name already follows one of them, which keeps it. A
    name rendered for another source than its existing lifecycle follows is refused: a
    lifecycle is never re-pointed. Renders templates: run it off the event loop."""
    problems: list[str] = []
    by_name: dict[str, list[dict[str, Any]]] = {}
    for obj in items:
        try:
            lifecycle = lifecycle_for(policy, source, version, obj)
        except PolicyError as error:
            problems.append(f"{(obj.get('metadata') or {}).get('name')}: {error}")
            continue
        if lifecycle is not None:
            by_name.setdefault(lifecycle["metadata"]["name"], []).append(lifecycle)
    wanted: dict[str, dict[str, Any]] = {}
    untouched: set[str] = set()
    for name, candidates in by_name.items():
        current = have.get(name)
        followed = _source_of(current) if current is not None else None
        chosen = [c for c in candidates if _source_of(c) == followed] if followed else candidates
        sources = ", ".join(sorted("/".join(filter(None, _source_of(c))) for c in candidates))
        if len(chosen) == 1 and (len(candidates) == 1 or followed):
            wanted[name] = chosen[0]
            if len(candidates) > 1:
                problems.append(
                    f"{name}: rendered for several sources ({sources}); it stays with "
                    f"{'/'.join(filter(None, followed or ()))}"
                )
            continue
        untouched.add(name)
        if followed and not chosen:
            problems.append(
                f"{name}: follows {'/'.join(filter(None, followed))}; refused for {sources}"
            )
        else:
            problems.append(f"{name}: rendered for several sources ({sources}); none is imported")
    return wanted, untouched, problems


async def reconcile_policy(host: KubeClient, policy: Mapping[str, Any]) -> list[dict[str, str]]:
    """Make the policy's lifecycles match its selected source objects; its conditions."""
    name = str((policy.get("metadata") or {}).get("name", ""))
    try:
        source = policy_source(policy.get("spec") or {})
        version = source.versions[0] if source.versions else ""
        version = version or await _preferred_version(host, source.group)
        source_path = _path(source.group, version, source.resource)
    except PolicyError as error:
        return [condition("Validated", False, "InvalidPolicy", str(error))]
    validated = condition("Validated", True, "Validated")
    try:
        listed = await host.get(source_path)
    except KubeError as error:
        return [validated, condition("Reconciling", False, "SourceUnavailable", str(error))]
    existing = await host.get(_LIFECYCLES, params={"labelSelector": f"{POLICY_LABEL}={name}"})
    labelled = {item["metadata"]["name"]: item for item in existing.get("items") or ()}
    have = {n: item for n, item in labelled.items() if owned_by(item, policy)}
    wanted, untouched, problems = await asyncio.to_thread(
        wanted_lifecycles, policy, source, version, list(listed.get("items") or ()), have
    )
    for lifecycle_name, lifecycle in wanted.items():
        current = have.get(lifecycle_name)
        try:
            if current is None:
                await host.post(_LIFECYCLES, lifecycle)
                logger.info("policy %s: lifecycle %s created", name, lifecycle_name)
            elif current.get("spec") != lifecycle["spec"]:
                await host.patch(f"{_LIFECYCLES}/{lifecycle_name}", {"spec": lifecycle["spec"]})
        except KubeError as error:
            if error.status == 409:
                problems.append(f"{lifecycle_name}: a lifecycle of that name is not this policy's")
            else:
                problems.append(f"{lifecycle_name}: {_refused(error)}")
    for lifecycle_name, current in have.items():
        taken = [
            c for c in (current.get("status") or {}).get("conditions") or ()
            if c.get("type") == "Created" and c.get("reason") == "NameTaken"
        ]  # fmt: skip
        if taken:
            problems.append(f"{lifecycle_name}: {taken[0].get('message', '')}")
    for gone in stale(list(have), [*wanted, *untouched]):
        try:
            await host.delete(
                f"{_LIFECYCLES}/{gone}", {"preconditions": {"uid": have[gone]["metadata"]["uid"]}}
            )
            logger.info("policy %s: lifecycle %s deleted (its source went)", name, gone)
        except KubeError as error:
            if error.status not in (404, 409):
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
        except PolicyError as error:
            conditions = [condition("Reconciling", False, error.reason, str(error))]
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
        source_path = _path(
            str(source.get("group") or ""),
            str(source.get("version") or "v1"),
            str(source.get("resource", "")),
            str(source.get("namespace") or ""),
            str(source.get("name", "")),
        )
    except PolicyError as error:
        return [condition("Created", False, "InvalidSource", str(error))]
    try:
        obj = await host.get(source_path)
    except KubeError as error:
        if error.status == 404:  # its source went: so does the lifecycle, and its cluster
            await host.delete(f"{_LIFECYCLES}/{name}")
            return []
        raise
    try:
        pointers = await asyncio.to_thread(references_of, spec, obj)
        references = {reference.key: await _referenced(host, reference) for reference in pointers}
        wanted = await asyncio.to_thread(pediacluster_spec, spec, obj, references)
    except PolicyError as error:
        return [condition("Created", False, error.reason, str(error))]
    except KubeError as error:
        return [condition("Created", False, "ReferenceUnavailable", str(error))]
    try:
        current = await host.get(f"{_PEDIACLUSTERS}/{name}")
    except KubeError as error:
        if error.status != 404:
            raise
        current = None
    if current is not None and not owned_by(current, lifecycle):
        return [
            condition(
                "Created", False, "NameTaken",
                f"PediaCluster {name} exists and was not created by this lifecycle; "
                "it is left as it is",
            )
        ]  # fmt: skip
    try:
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
                return [
                    condition("Created", True, "Created"), condition("Updating", True, "Updated")
                ]  # fmt: skip
    except KubeError as error:
        if error.status >= 500 or error.status in (0, 429):
            raise
        logger.warning("lifecycle %s: PediaCluster not written: %s", name, _refused(error))
        return [condition("Created", False, "Refused", _refused(error))]
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
async def lifecycle_deleted(name: str, body: Any, memo: Runtime, **_: Any) -> None:
    """Its PediaCluster goes too, if it is the lifecycle's (owner references say so; a host
    without a garbage collector, such as a bare kube-apiserver, needs it said). A PediaCluster
    of the same name that it did not create stays."""
    assert memo.host is not None
    try:
        current = await memo.host.get(f"{_PEDIACLUSTERS}/{name}")
        if not owned_by(current, body):
            logger.info("lifecycle %s deleted: PediaCluster %s is not its own, kept", name, name)
            return
        uid = current["metadata"]["uid"]
        await memo.host.delete(f"{_PEDIACLUSTERS}/{name}", {"preconditions": {"uid": uid}})
        logger.info("lifecycle %s deleted: its PediaCluster is deleted", name)
    except KubeError as error:
        if error.status not in (404, 409):
            raise


@kopf.on.delete(
    POLICY_GROUP, POLICY_VERSION, "clusterimportpolicies", registry=registry, when=_default_shard
)
async def policy_deleted(name: str, body: Any, memo: Runtime, **_: Any) -> None:
    """Its lifecycles go too, and with them their PediaClusters (said here for a host without
    a garbage collector, as for lifecycles); only those it owns."""
    assert memo.host is not None
    labelled = await memo.host.get(_LIFECYCLES, params={"labelSelector": f"{POLICY_LABEL}={name}"})
    for item in labelled.get("items") or ():
        if not owned_by(item, body):
            continue
        try:
            await memo.host.delete(
                f"{_LIFECYCLES}/{item['metadata']['name']}",
                {"preconditions": {"uid": item["metadata"]["uid"]}},
            )
        except KubeError as error:
            if error.status not in (404, 409):
                raise
