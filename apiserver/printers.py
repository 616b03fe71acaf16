"""kubectl's columns for the common built-in kinds, computed from stored objects.

Ported from Kubernetes' ``pkg/printers/internalversion/printers.go`` (the columns kubectl shows
for ``get``), reduced to what can be derived from the object alone. Custom resources use their
CRD's ``additionalPrinterColumns`` (see ``jsonpath.py``); everything else gets Name and Age.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str = "string"
    format: str = ""
    priority: int = 0
    description: str = ""

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


def human_duration(seconds: float) -> str:
    """Kubernetes' ``duration.HumanDuration``: 45s, 3m20s, 5h, 12d, 2y30d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y{rest}d" if rest else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(value: Any, now: datetime | None = None) -> str:
    when = parse_time(value)
    if when is None:
        return "<unknown>"
    return human_duration(((now or datetime.now(UTC)) - when).total_seconds())


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def _age(obj: Obj) -> str:
    return age(_meta(obj).get("creationTimestamp"))


def _none(values: list[str]) -> str:
    return ",".join(values) if values else "<none>"


def _selector(selector: Obj | None) -> str:
    if not selector:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or ():
        key, operator = expression.get("key", ""), expression.get("operator", "")
        values = ",".join(expression.get("values") or ())
        parts.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }.get(operator, key)
        )
    return ",".join(parts) if parts else "<none>"


def _map_selector(selector: Obj | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items())) or "<none>"


def _containers(template: Obj) -> tuple[str, str]:
    containers = (template.get("spec") or {}).get("containers") or []
    return (
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
    )


WORKLOAD_WIDE = [Column("Containers", priority=1), Column("Images", priority=1)]


# -- pods ----------------------------------------------------------------------------------


def _pod(obj: Obj) -> list[Any]:
    spec, status, meta = _spec(obj), _status(obj), _meta(obj)
    containers = spec.get("containers") or []
    reason = status.get("reason") or status.get("phase") or ""
    ready = restarts = 0
    initializing = False
    for index, container in enumerate(status.get("initContainerStatuses") or ()):
        restarts += int(container.get("restartCount") or 0)
        state = container.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated and terminated.get("exitCode") == 0:
            continue
        initializing = True
        if terminated:
            reason = "Init:" + (
                terminated.get("reason") or f"ExitCode:{terminated.get('exitCode')}"
            )
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{index}/{len(spec.get('initContainers') or [])}"
        break
    if not initializing:
        running = False
        for container in reversed(status.get("containerStatuses") or []):
            restarts += int(container.get("restartCount") or 0)
            state = container.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif (state.get("terminated") or {}).get("reason"):
                reason = state["terminated"]["reason"]
            elif state.get("terminated"):
                terminated = state["terminated"]
                reason = (
                    f"Signal:{terminated['signal']}"
                    if terminated.get("signal")
                    else f"ExitCode:{terminated.get('exitCode')}"
                )
            elif container.get("ready") and state.get("running") is not None:
                running = True
                ready += 1
        if reason == "Completed" and running:
            reason = "Running"
    if meta.get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    gates = spec.get("readinessGates") or []
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
    ready_gates = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
    return [
        meta.get("name"),
        f"{ready}/{len(containers)}",
        reason,
        str(restarts),
        _age(obj),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        f"{ready_gates}/{len(gates)}" if gates else "<none>",
    ]


POD = [
    Column("Ready"), Column("Status"), Column("Restarts"), Column("Age"),
    Column("IP", priority=1), Column("Node", priority=1),
    Column("Nominated Node", priority=1), Column("Readiness Gates", priority=1),
]  # fmt: skip


# -- workloads -----------------------------------------------------------------------------


def _deployment(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    containers, images = _containers(spec.get("template") or {})
    return [
        _meta(obj).get("name"),
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _age(obj),
        containers,
        images,
        _selector(spec.get("selector")),
    ]


def _replicaset(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    containers, images = _containers(spec.get("template") or {})
    return [
        _meta(obj).get("name"),
        spec.get("replicas", 1),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        _age(obj),
        containers,
        images,
        _selector(spec.get("selector")),
    ]


def _statefulset(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    containers, images = _containers(spec.get("template") or {})
    return [
        _meta(obj).get("name"),
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        _age(obj),
        containers,
        images,
    ]


def _daemonset(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    template = spec.get("template") or {}
    containers, images = _containers(template)
    return [
        _meta(obj).get("name"),
        status.get("desiredNumberScheduled", 0),
        status.get("currentNumberScheduled", 0),
        status.get("numberReady", 0),
        status.get("updatedNumberScheduled", 0),
        status.get("numberAvailable", 0),
        _map_selector((template.get("spec") or {}).get("nodeSelector")),
        _age(obj),
        containers,
        images,
        _selector(spec.get("selector")),
    ]


def _job_status(status: Obj) -> str:
    for condition in status.get("conditions") or ():
        if condition.get("status") != "True":
            continue
        kind = condition.get("type")
        if kind == "Complete":
            return "Complete"
        if kind == "Failed":
            return "Failed"
        if kind == "Suspended":
            return "Suspended"
        if kind == "FailureTarget":
            return "FailureTarget"
        if kind == "SuccessCriteriaMet":
            return "SuccessCriteriaMet"
    return "Running"


def _job(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    containers, images = _containers(spec.get("template") or {})
    completions = spec.get("completions")
    parallelism = spec.get("parallelism", 1)
    succeeded = status.get("succeeded", 0)
    if completions is not None:
        done = f"{succeeded}/{completions}"
    else:
        done = f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    duration = ""
    if start is not None:
        duration = human_duration(((end or datetime.now(UTC)) - start).total_seconds())
    return [
        _meta(obj).get("name"),
        _job_status(status),
        done,
        duration,
        _age(obj),
        containers,
        images,
        _selector(spec.get("selector")),
    ]


def _cronjob(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
    containers, images = _containers(template)
    last = status.get("lastScheduleTime")
    return [
        _meta(obj).get("name"),
        spec.get("schedule", ""),
        spec.get("timeZone") or "<none>",
        "True" if spec.get("suspend") else "False",
        len(status.get("active") or ()),
        age(last) if last else "<none>",
        _age(obj),
        containers,
        images,
        _selector(((spec.get("jobTemplate") or {}).get("spec") or {}).get("selector")),
    ]


# -- networking ----------------------------------------------------------------------------


def _service(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    kind = spec.get("type", "ClusterIP")
    external: list[str] = []
    if kind == "LoadBalancer":
        for ingress in (status.get("loadBalancer") or {}).get("ingress") or ():
            external.append(ingress.get("ip") or ingress.get("hostname") or "")
        external += spec.get("externalIPs") or []
        external_ip = ",".join(external) if external else "<pending>"
    elif kind == "ExternalName":
        external_ip = spec.get("externalName", "")
    else:
        external_ip = ",".join(spec.get("externalIPs") or []) or "<none>"
    ports = []
    for port in spec.get("ports") or ():
        text = f"{port.get('port')}/{port.get('protocol', 'TCP')}"
        if port.get("nodePort"):
            text = f"{port.get('port')}:{port['nodePort']}/{port.get('protocol', 'TCP')}"
        ports.append(text)
    return [
        _meta(obj).get("name"),
        kind,
        spec.get("clusterIP") or "<none>",
        external_ip,
        ",".join(ports) or "<none>",
        _age(obj),
        _map_selector(spec.get("selector")),
    ]


def _ingress(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    hosts = [rule.get("host") for rule in spec.get("rules") or () if rule.get("host")]
    addresses = [
        i.get("ip") or i.get("hostname") or ""
        for i in (status.get("loadBalancer") or {}).get("ingress") or ()
    ]
    return [
        _meta(obj).get("name"),
        spec.get("ingressClassName") or "<none>",
        ",".join(hosts) or "*",
        ",".join(addresses),
        "80, 443" if spec.get("tls") else "80",
        _age(obj),
    ]


# -- config, cluster -----------------------------------------------------------------------


def _configmap(obj: Obj) -> list[Any]:
    count = len(obj.get("data") or {}) + len(obj.get("binaryData") or {})
    return [_meta(obj).get("name"), count, _age(obj)]


def _secret(obj: Obj) -> list[Any]:
    return [
        _meta(obj).get("name"),
        obj.get("type", ""),
        len(obj.get("data") or {}),
        _age(obj),
    ]


def _namespace(obj: Obj) -> list[Any]:
    return [_meta(obj).get("name"), _status(obj).get("phase", ""), _age(obj)]


def _node(obj: Obj) -> list[Any]:
    spec, status, meta = _spec(obj), _status(obj), _meta(obj)
    conditions = [
        c.get("type")
        if c.get("status") == "True"
        else ("NotReady" if c.get("type") == "Ready" else f"Not{c.get('type')}")
        for c in status.get("conditions") or ()
        if c.get("type") == "Ready"
    ] or ["Unknown"]
    if spec.get("unschedulable"):
        conditions.append("SchedulingDisabled")
    roles = sorted(
        key.removeprefix("node-role.kubernetes.io/")
        for key in meta.get("labels") or {}
        if key.startswith("node-role.kubernetes.io/")
    )
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or ()}
    info = status.get("nodeInfo") or {}
    return [
        meta.get("name"),
        ",".join(conditions),
        ",".join(roles) or "<none>",
        _age(obj),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP") or "<none>",
        addresses.get("ExternalIP") or "<none>",
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


_ACCESS_MODES = {
    "ReadWriteOnce": "RWO",
    "ReadOnlyMany": "ROX",
    "ReadWriteMany": "RWX",
    "ReadWriteOncePod": "RWOP",
}


def _modes(modes: list[str] | None) -> str:
    return ",".join(_ACCESS_MODES.get(m, m) for m in modes or ())


def _pv(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    claim = spec.get("claimRef") or {}
    return [
        _meta(obj).get("name"),
        (spec.get("capacity") or {}).get("storage", ""),
        _modes(spec.get("accessModes")),
        spec.get("persistentVolumeReclaimPolicy", ""),
        status.get("phase", ""),
        f"{claim.get('namespace')}/{claim.get('name')}" if claim else "",
        spec.get("storageClassName", ""),
        spec.get("volumeAttributesClassName") or "<unset>",
        status.get("reason", ""),
        _age(obj),
        spec.get("volumeMode") or "<unset>",
    ]


def _pvc(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    phase = "Terminating" if _meta(obj).get("deletionTimestamp") else status.get("phase", "")
    return [
        _meta(obj).get("name"),
        phase,
        spec.get("volumeName", ""),
        (status.get("capacity") or {}).get("storage", ""),
        _modes(status.get("accessModes")),
        spec.get("storageClassName") or "",
        spec.get("volumeAttributesClassName") or "<unset>",
        _age(obj),
        spec.get("volumeMode") or "<unset>",
    ]


def _event(obj: Obj) -> list[Any]:
    involved = obj.get("involvedObject") or {}
    source = obj.get("source") or {}
    first = obj.get("firstTimestamp") or obj.get("eventTime")
    last = obj.get("lastTimestamp") or first
    count = obj.get("count") or 1
    if obj.get("series"):
        last = obj["series"].get("lastObservedTime") or last
        count = obj["series"].get("count") or count
    kind = (involved.get("kind") or "").lower()
    component = source.get("component") or obj.get("reportingComponent") or ""
    instance = source.get("host") or obj.get("reportingInstance") or ""
    return [
        age(last) if last else "<unknown>",
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{kind}/{involved['name']}" if involved.get("name") else kind,
        involved.get("fieldPath", ""),
        f"{component}, {instance}" if instance else component,
        (obj.get("message") or "").strip(),
        age(first) if first else "<unknown>",
        count,
        _meta(obj).get("name"),
    ]


def _events_k8s_io(obj: Obj) -> list[Any]:
    """An events.k8s.io/v1 Event in core/v1 field names, as kube converts it to print."""
    return _event(
        {
            **obj,
            "involvedObject": obj.get("regarding") or {},
            "message": obj.get("note", ""),
            "source": obj.get("deprecatedSource") or {},
            "firstTimestamp": obj.get("deprecatedFirstTimestamp"),
            "lastTimestamp": obj.get("deprecatedLastTimestamp"),
            "count": obj.get("deprecatedCount"),
            "reportingComponent": obj.get("reportingController", ""),
        }
    )


def name_age(obj: Obj) -> list[Any]:
    """Name and Age: the cells of a kind whose printer has no other column."""
    return [_meta(obj).get("name"), _age(obj)]


@dataclass(frozen=True, slots=True)
class Printer:
    """Columns after Name (or the first column, for events) and the row function."""

    columns: list[Column]
    row: Callable[[Obj], list[Any]]
    name_first: bool = True


AGE = Column("Age")
NAME = Column("Name", format="name", description="Name must be unique within a namespace.")
SELECTOR_WIDE = [Column("Selector", priority=1)]

EVENTS = Printer(
    [Column("Last Seen"), Column("Type"), Column("Reason"), Column("Object"),
     Column("Subobject", priority=1), Column("Source", priority=1), Column("Message"),
     Column("First Seen", priority=1), Column("Count", "integer", priority=1),
     Column("Name", format="name", priority=1)],
    _event,
    name_first=False,
)  # fmt: skip

PRINTERS: dict[tuple[str, str], Printer] = {
    ("", "pods"): Printer(POD, _pod),
    ("apps", "deployments"): Printer(
        [Column("Ready"), Column("Up-to-date", "integer"), Column("Available", "integer"), AGE,
         *WORKLOAD_WIDE, *SELECTOR_WIDE],
        _deployment,
    ),
    ("apps", "replicasets"): Printer(
        [Column("Desired", "integer"), Column("Current", "integer"), Column("Ready", "integer"),
         AGE, *WORKLOAD_WIDE, *SELECTOR_WIDE],
        _replicaset,
    ),
    ("apps", "statefulsets"): Printer([Column("Ready"), AGE, *WORKLOAD_WIDE], _statefulset),
    ("apps", "daemonsets"): Printer(
        [Column("Desired", "integer"), Column("Current", "integer"), Column("Ready", "integer"),
         Column("Up-to-date", "integer"), Column("Available", "integer"),
         Column("Node Selector"), AGE, *WORKLOAD_WIDE, *SELECTOR_WIDE],
        _daemonset,
    ),
    ("batch", "jobs"): Printer(
        [Column("Status"), Column("Completions"), Column("Duration"), AGE, *WORKLOAD_WIDE,
         *SELECTOR_WIDE],
        _job,
    ),
    ("batch", "cronjobs"): Printer(
        [Column("Schedule"), Column("Timezone"), Column("Suspend", "boolean"),
         Column("Active", "integer"), Column("Last Schedule"), AGE, *WORKLOAD_WIDE,
         *SELECTOR_WIDE],
        _cronjob,
    ),
    ("", "services"): Printer(
        [Column("Type"), Column("Cluster-IP"), Column("External-IP"), Column("Port(s)"), AGE,
         *SELECTOR_WIDE],
        _service,
    ),
    ("networking.k8s.io", "ingresses"): Printer(
        [Column("Class"), Column("Hosts"), Column("Address"), Column("Ports"), AGE], _ingress
    ),
    ("", "configmaps"): Printer([Column("Data", "integer"), AGE], _configmap),
    ("", "secrets"): Printer([Column("Type"), Column("Data", "integer"), AGE], _secret),
    ("", "namespaces"): Printer([Column("Status"), AGE], _namespace),
    ("", "nodes"): Printer(
        [Column("Status"), Column("Roles"), AGE, Column("Version"),
         Column("Internal-IP", priority=1), Column("External-IP", priority=1),
         Column("OS-Image", priority=1), Column("Kernel-Version", priority=1),
         Column("Container-Runtime", priority=1)],
        _node,
    ),
    ("", "persistentvolumes"): Printer(
        [Column("Capacity"), Column("Access Modes"), Column("Reclaim Policy"), Column("Status"),
         Column("Claim"), Column("StorageClass"), Column("VolumeAttributesClass"),
         Column("Reason"), AGE, Column("VolumeMode", priority=1)],
        _pv,
    ),
    ("", "persistentvolumeclaims"): Printer(
        [Column("Status"), Column("Volume"), Column("Capacity"), Column("Access Modes"),
         Column("StorageClass"), Column("VolumeAttributesClass"), AGE,
         Column("VolumeMode", priority=1)],
        _pvc,
    ),
    ("", "events"): EVENTS,
    ("events.k8s.io", "events"): Printer(EVENTS.columns, _events_k8s_io, name_first=False),
    ("", "serviceaccounts"): Printer([AGE], name_age),
}  # fmt: skip
