"""PediaCluster.status, rendered from what a cluster's synchro knows: pure functions only.

One renderer for every status the product writes: the synchro's (health, discovery, workers)
and the operator's for a spec it cannot use, so both speak the same conditions. Shaped as the
original's (Validated, SynchroRunning, ClusterHealthy, Ready), plus per-resource progress.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clusterpedia.sync.targets import SyncTarget
from clusterpedia.sync.worker import ResourceStatus

_PROGRESS = ("objects", "lastEventTime")  # the fields of a syncCondition that only count


def _timestamp(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, status: bool | None, reason: str, message: str = "") -> dict[str, str]:
    return {
        "type": kind,
        "status": "Unknown" if status is None else ("True" if status else "False"),
        "reason": reason,
        "message": message,
    }


@dataclass
class Transitions:
    """The lastTransitionTime of each condition: it changes only when status or reason does."""

    _seen: dict[str, tuple[str, str]] = field(default_factory=dict)

    def stamp(self, cond: dict[str, str], *, now: datetime | None = None) -> dict[str, str]:
        state = f"{cond['status']}/{cond['reason']}"
        previous = self._seen.get(cond["type"])
        if previous is None or previous[0] != state:
            previous = (state, _timestamp(now))
            self._seen[cond["type"]] = previous
        return {**cond, "lastTransitionTime": previous[1]}


@dataclass(frozen=True)
class SynchroState:
    """What the status says, as plain values."""

    warnings: tuple[str, ...] = ()
    invalid_config: str = ""  # the spec cannot be used at all (the operator's verdict)
    sync_error: str = ""  # syncResources names nothing the member serves, or is malformed
    internal_error: str = ""  # why the synchro's loop last failed
    healthy: bool | None = None  # None: not probed yet
    health_message: str = ""
    running: bool = False  # some worker runs


def conditions(state: SynchroState) -> list[dict[str, str]]:
    """Validated, SynchroRunning, ClusterHealthy and Ready, in that order."""
    if state.invalid_config:
        validated = condition("Validated", False, "InvalidConfig", state.invalid_config)
        running = condition("SynchroRunning", False, "InvalidConfig", state.invalid_config)
        health = condition("ClusterHealthy", None, "MonitorStop")
        return [validated, running, health, _ready([validated, running, health])]
    validated = condition("Validated", True, "Validated", "; ".join(state.warnings))
    if state.internal_error:
        running = condition("SynchroRunning", False, "InternalError", state.internal_error)
    elif state.sync_error:
        running = condition("SynchroRunning", False, "InvalidSyncResources", state.sync_error)
    elif state.healthy is False:
        running = condition(
            "SynchroRunning", False, "Pending", "waiting for the cluster to be healthy"
        )
    elif state.running:
        running = condition("SynchroRunning", True, "Running")
    else:
        running = condition("SynchroRunning", False, "WaitInit")
    health = {
        None: condition("ClusterHealthy", None, "MonitorStop", "not probed yet"),
        True: condition("ClusterHealthy", True, "Healthy"),
        False: condition("ClusterHealthy", False, "Unhealthy", state.health_message),
    }[state.healthy]
    if state.sync_error:
        validated = condition("Validated", False, "InvalidSyncResources", state.sync_error)
    return [validated, running, health, _ready([validated, running, health])]


def _ready(others: Sequence[dict[str, str]]) -> dict[str, str]:
    not_true = [c for c in others if c["status"] != "True"]
    if not not_true:
        return condition("Ready", True, "Ready")
    return condition(
        "Ready",
        False,
        "NotReady",
        "{type} condition is {status}, reason is {reason}".format(**not_true[0]),
    )


def sync_resources(workers: Iterable[tuple[SyncTarget, ResourceStatus]]) -> list[dict[str, Any]]:
    """``status.syncResources``: per group and resource, each synced version's progress."""
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for target, status in workers:
        rtype = target.rtype
        phase, reason, message = status.condition()
        resource = groups.setdefault(rtype.group, {}).setdefault(
            rtype.resource,
            {
                "name": rtype.resource,
                "kind": rtype.kind,
                "namespaced": target.namespaced,
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
                    _timestamp(datetime.fromtimestamp(status.last_event_time, UTC))
                    if status.last_event_time
                    else None
                ),
            }
        )
    return [
        {"group": group, "resources": sorted(resources.values(), key=lambda r: r["name"])}
        for group, resources in sorted(groups.items())
    ]


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
