"""``--feature-gates`` with the original's gate names (v0.9.1, both of its binaries).

Its manifests pass the flag, so a migrating user's Deployment keeps it. Each gate is one of:

- a behaviour we always have: accepted at the value that describes us, and said at start;
- a switch of ours under another name: honoured both ways;
- a behaviour we lack: its default (off) accepted, on refused with the reason.

An unknown gate is refused: a typo must not pass for a setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class _Gate:
    # the values we honour, each with what it means here
    accepted: dict[bool, str]
    # when a value is refused: why
    refused: str = ""
    switch: str = ""  # the FeatureGates field it sets


_ALWAYS_ON = "always on here"
GATES: dict[str, _Gate] = {
    # clustersynchro-manager
    "PruneManagedFields": _Gate(
        {True: "managedFields are always pruned before storing"},
        refused="managedFields are never stored here",
    ),
    "PruneLastAppliedConfiguration": _Gate(
        {True: "the last-applied annotation is always pruned before storing"},
        refused="the last-applied annotation is never stored here",
    ),
    "AllowSyncAllCustomResources": _Gate(
        {
            True: "syncAllCustomResources is " + _ALWAYS_ON,
            False: "syncAllCustomResources is "
            "honoured whatever this gate says (a spec that asks for it gets it)",
        },
    ),
    "AllowSyncAllResources": _Gate(
        {
            True: 'group "*" is ' + _ALWAYS_ON,
            False: 'group "*" is honoured whatever this '
            "gate says (a spec that asks for it gets it)",
        },
    ),
    "HealthCheckerWithStandaloneTCP": _Gate(
        {
            True: "the health probe has its own connection, always",
            False: "the health probe has its own connection whatever this gate says",
        },
    ),
    "ForcePaginatedListForResourceSync": _Gate(
        {
            True: "lists are always paginated (--page-size)",
            False: "lists are paginated whatever this gate says (--page-size)",
        },
    ),
    "StreamHandlePaginatedListForResourceSync": _Gate(
        {
            True: "each page is stored as it arrives, always",
            False: "each page is stored as it arrives whatever this gate says",
        },
    ),
    "IgnoreSyncLease": _Gate(
        {True: "leases.coordination.k8s.io is never synced", False: ""},
        switch="ignore_sync_lease",
    ),
    "ClusterAuthenticationFromSecret": _Gate(
        {
            True: "authenticationFrom is " + _ALWAYS_ON,
            False: "authenticationFrom is honoured whatever this gate says",
        },
    ),
    # apiserver
    "AllowProxyRequestToClusters": _Gate(
        {
            True: "requests reach members as --allowed-proxy-subresources, "
            "--allow-forward-unsync-resource-request and --enable-proxy-path-for-forward-request "
            "say, acting there as the requesting user",
            False: "requests reach members whatever this gate says, as "
            "--allowed-proxy-subresources (default pods/log,exec,attach,portforward) and the "
            "forward flags say; --allowed-proxy-subresources= turns subresources off",
        },
    ),
    "NotConvertToMemoryVersion": _Gate(
        {
            True: "stored objects are served as stored, always",
            False: "stored objects are served as stored whatever this gate says",
        },
    ),
    "AllowRawSQLQuery": _Gate(
        {False: ""},
        refused="raw whereSQL is never pasted into a query here; use whereSQLStatement "
        "(AllowParameterizedSQLQuery=true or --allow-where-sql)",
    ),
    "AllowParameterizedSQLQuery": _Gate(
        {True: "whereSQLStatement is accepted (as --allow-where-sql)", False: ""},
        switch="allow_where_sql",
    ),
    "RemainingItemCount": _Gate(
        {False: ""},
        refused="remainingItemCount is returned when a request asks (withRemainingCount=true)",
    ),
    "APIServerTracing": _Gate({False: ""}, refused="tracing is not built"),
}


@dataclass(frozen=True)
class FeatureGates:
    """What the gates switch, and what they are said to mean at start."""

    allow_where_sql: bool = False
    ignore_sync_lease: bool = False
    notes: tuple[str, ...] = field(default=(), compare=False)


class FeatureGateError(ValueError):
    """A gate that is unknown, malformed, or set to a value we cannot honour."""


def parse_feature_gates(text: str) -> FeatureGates:
    """``A=true,B=false`` as Kubernetes writes it."""
    switches: dict[str, bool] = {}
    notes: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name, raw = name.strip(), raw.strip().lower()
        if not sep or raw not in ("true", "false"):
            raise FeatureGateError(f"{item!r}: write a gate as Name=true or Name=false")
        gate = GATES.get(name)
        if gate is None:
            known = ", ".join(sorted(GATES))
            raise FeatureGateError(f"unknown feature gate {name!r}; known: {known}")
        value = raw == "true"
        if value not in gate.accepted:
            raise FeatureGateError(f"{name}={raw} is not supported: {gate.refused}")
        if gate.switch:
            switches[gate.switch] = value
        if gate.accepted[value]:
            notes.append(f"{name}={raw}: {gate.accepted[value]}")
    return FeatureGates(**switches, notes=tuple(notes))
