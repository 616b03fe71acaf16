"""kubectl's columns for the platform kinds: RBAC, networking, storage, scheduling,
admission, flow control, certificates, DRA, and the core kinds ``printers.py`` leaves out.

Ported from Kubernetes' ``pkg/printers/internalversion/printers.go`` (v1.35) and
kube-aggregator's APIService printer; ``tests/integration/test_builtin_tables.py`` holds every
one of them to the member kube-apiserver's own Table. The cells' JSON types are kube's: int64
columns are numbers, booleans are booleans.
"""

from __future__ import annotations

from typing import Any

from .printers import (
    AGE,
    Column,
    Obj,
    Printer,
    _age,
    _containers,
    _map_selector,
    _meta,
    _selector,
    _spec,
    _status,
    human_duration,
    name_age,
)

_MORE = "{} + {} more..."


def _listed(values: list[str], count: int, *, most: int = 3, empty: str = "<unset>") -> str:
    """kube's listWithMoreString: the first ``most`` values, then how many more."""
    text = ",".join(values[:most])
    if count > most:
        return _MORE.format(text, count - most)
    return text or empty


# -- core ----------------------------------------------------------------------------------


def _endpoints(obj: Obj) -> list[Any]:
    subsets = obj.get("subsets") or []
    shown: list[str] = []
    count = 0
    for subset in subsets:
        addresses = subset.get("addresses") or []
        ports = subset.get("ports") or []
        if not ports:
            count += len(addresses)
            shown += [a.get("ip", "") for a in addresses]
            continue
        for port in ports:
            count += len(addresses)
            for address in addresses:
                ip = address.get("ip", "")
                host = f"[{ip}]" if ":" in ip else ip
                shown.append(f"{host}:{port.get('port', 0)}")
    text = ",".join(shown[:3])
    cell = _MORE.format(text, count - 3) if count > 3 else text
    return [_meta(obj).get("name"), cell if subsets else "<none>", _age(obj)]


def _podtemplate(obj: Obj) -> list[Any]:
    template = obj.get("template") or {}
    names, images = _containers(template)
    labels = _map_selector((template.get("metadata") or {}).get("labels"))
    return [_meta(obj).get("name"), names, images, labels]


def _replicationcontroller(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    names, images = _containers(spec.get("template") or {})
    return [
        _meta(obj).get("name"),
        int(spec.get("replicas") or 0),
        int(status.get("replicas") or 0),
        int(status.get("readyReplicas") or 0),
        _age(obj),
        names,
        images,
        _map_selector(spec.get("selector")),
    ]


def _resourcequota(obj: Obj) -> list[Any]:
    status = _status(obj)
    hard, used = status.get("hard") or {}, status.get("used") or {}
    requests: list[str] = []
    limits: list[str] = []
    for resource in sorted(hard):
        text = f"{resource}: {used.get(resource, '0')}/{hard[resource]}"
        parts = resource.split(".")
        (limits if len(parts) > 1 and parts[0] == "limits" else requests).append(text)
    return [_meta(obj).get("name"), ", ".join(requests), ", ".join(limits), _age(obj)]


# -- apps, autoscaling, policy ---------------------------------------------------------------


def _group_kind(api_version: str, kind: str) -> str:
    group = api_version.split("/")[0] if "/" in api_version else ""
    return f"{kind}.{group}" if group else kind


def _controllerrevision(obj: Obj) -> list[Any]:
    controller = "<none>"
    for ref in _meta(obj).get("ownerReferences") or ():
        if ref.get("controller"):
            kind = _group_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
            controller = f"{kind.lower()}/{ref.get('name', '')}" if kind else ref.get("name", "")
            break
    return [_meta(obj).get("name"), controller, int(obj.get("revision") or 0), _age(obj)]


def _hpa_metric(spec: Obj, status: Obj | None) -> str:
    kind = spec.get("type")
    if kind == "Resource" or kind == "ContainerResource":
        key = "resource" if kind == "Resource" else "containerResource"
        source, current_source = spec.get(key) or {}, (status or {}).get(key)
        target = source.get("target") or {}
        name = source.get("name", "")
        if target.get("averageValue") is not None:
            current = "<unknown>"
            if current_source and (current_source.get("current") or {}).get("averageValue"):
                current = str(current_source["current"]["averageValue"])
            return f"{name}: {current}/{target['averageValue']}"
        current = "<unknown>"
        utilization = ((current_source or {}).get("current") or {}).get("averageUtilization")
        if current_source and utilization is not None:
            current = f"{utilization}%"
        wanted = target.get("averageUtilization")
        return f"{name}: {current}/{wanted}%" if wanted is not None else f"{name}: {current}/<auto>"
    if kind in ("External", "Object", "Pods"):
        key = {"External": "external", "Object": "object", "Pods": "pods"}[kind]
        target = (spec.get(key) or {}).get("target") or {}
        current_of = ((status or {}).get(key) or {}).get("current") or {}
        measured = bool(status and status.get(key))
        if kind == "Pods" or target.get("averageValue") is not None:
            average = current_of.get("averageValue") if measured else None
            suffix = "" if kind == "Pods" else " (avg)"
            return f"{average or '<unknown>'}/{target.get('averageValue', '')}{suffix}"
        value = current_of.get("value") if measured else None
        return f"{value or '<unknown>'}/{target.get('value', '')}"
    return "<unknown type>"


def _hpa(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    ref = spec.get("scaleTargetRef") or {}
    metrics = spec.get("metrics") or []
    statuses = status.get("currentMetrics") or []
    shown = [
        _hpa_metric(m, statuses[i] if i < len(statuses) else None) for i, m in enumerate(metrics)
    ]
    targets = ", ".join(shown[:2])
    if len(shown) > 2:
        targets = _MORE.format(targets, len(shown) - 2)
    minimum = spec.get("minReplicas")
    return [
        _meta(obj).get("name"),
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        targets if metrics else "<none>",
        str(minimum) if minimum is not None else "<unset>",
        int(spec.get("maxReplicas") or 0),
        int(status.get("currentReplicas") or 0),
        _age(obj),
    ]


def _pdb(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    least, most = spec.get("minAvailable"), spec.get("maxUnavailable")
    return [
        _meta(obj).get("name"),
        str(least) if least is not None else "N/A",
        str(most) if most is not None else "N/A",
        int(_status(obj).get("disruptionsAllowed") or 0),
        _age(obj),
    ]


# -- certificates, coordination, discovery ----------------------------------------------------


def _csr(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    types = {c.get("type") for c in status.get("conditions") or ()}
    condition = "Denied" if "Denied" in types else "Approved" if "Approved" in types else "Pending"
    if "Failed" in types:
        condition += ",Failed"
    if status.get("certificate"):
        condition += ",Issued"
    seconds = spec.get("expirationSeconds")
    return [
        _meta(obj).get("name"),
        _age(obj),
        spec.get("signerName") or "<none>",
        spec.get("username", ""),
        human_duration(seconds) if seconds is not None else "<none>",
        condition,
    ]


def _lease(obj: Obj) -> list[Any]:
    return [_meta(obj).get("name"), _spec(obj).get("holderIdentity") or "", _age(obj)]


def _endpointslice(obj: Obj) -> list[Any]:
    ports = obj.get("ports") or []
    port_names = [
        str(p["port"]) if p.get("port") is not None else p.get("name") or "*" for p in ports
    ]
    addresses = [a for e in obj.get("endpoints") or () for a in e.get("addresses") or ()]
    return [
        _meta(obj).get("name"),
        obj.get("addressType", ""),
        _listed(port_names, len(port_names)),
        _listed(addresses, len(addresses)),
        _age(obj),
    ]


# -- networking ---------------------------------------------------------------------------------


def _ingressclass(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    parameters = "<none>"
    if spec.get("parameters"):
        given = spec["parameters"]
        parameters = given.get("kind", "")
        if given.get("apiGroup") is not None:
            parameters += "." + given["apiGroup"]
        parameters += "/" + given.get("name", "")
    return [_meta(obj).get("name"), spec.get("controller", ""), parameters, _age(obj)]


def _ipaddress(obj: Obj) -> list[Any]:
    parent = _spec(obj).get("parentRef")
    shown = "<none>"
    if parent:
        resource, group = parent.get("resource", ""), parent.get("group", "")
        shown = (f"{resource}.{group}" if group else resource).lower()
        if parent.get("namespace"):
            shown += "/" + parent["namespace"]
        shown += "/" + parent.get("name", "")
    # kube's printer adds an age cell that its column definitions do not have: kept, so a
    # client reading cells by position sees what it sees from the member
    return [_meta(obj).get("name"), shown, _age(obj)]


def _networkpolicy(obj: Obj) -> list[Any]:
    return [_meta(obj).get("name"), _selector(_spec(obj).get("podSelector")), _age(obj)]


def _servicecidr(obj: Obj) -> list[Any]:
    return [_meta(obj).get("name"), ",".join(_spec(obj).get("cidrs") or ()), _age(obj)]


# -- rbac ---------------------------------------------------------------------------------------


def _binding(obj: Obj) -> list[Any]:
    ref = obj.get("roleRef") or {}
    users, groups, accounts = [], [], []
    for subject in obj.get("subjects") or ():
        kind, name = subject.get("kind"), subject.get("name", "")
        if kind == "User":
            users.append(name)
        elif kind == "Group":
            groups.append(name)
        elif kind == "ServiceAccount":
            accounts.append(f"{subject.get('namespace', '')}/{name}")
    return [
        _meta(obj).get("name"),
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        _age(obj),
        ", ".join(users),
        ", ".join(groups),
        ", ".join(accounts),
    ]


# -- storage ------------------------------------------------------------------------------------

_DEFAULT_CLASS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)


def _storageclass(obj: Obj) -> list[Any]:
    annotations = _meta(obj).get("annotations") or {}
    name = _meta(obj).get("name", "")
    if any(annotations.get(key) == "true" for key in _DEFAULT_CLASS):
        name += " (default)"
    return [
        name,
        obj.get("provisioner", ""),
        obj.get("reclaimPolicy") or "Delete",
        obj.get("volumeBindingMode") or "Immediate",
        bool(obj.get("allowVolumeExpansion") or False),
        _age(obj),
    ]


def _csidriver(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    tokens = spec.get("tokenRequests")
    return [
        _meta(obj).get("name"),
        bool(spec.get("attachRequired", True)),
        bool(spec.get("podInfoOnMount", False)),
        bool(spec.get("storageCapacity", False)),
        ",".join(t.get("audience", "") for t in tokens) if tokens is not None else "<unset>",
        bool(spec.get("requiresRepublish", False)),
        ",".join(spec.get("volumeLifecycleModes") or ()) or "<none>",
        _age(obj),
    ]


def _csinode(obj: Obj) -> list[Any]:
    return [_meta(obj).get("name"), len(_spec(obj).get("drivers") or ()), _age(obj)]


def _volumeattachment(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    return [
        _meta(obj).get("name"),
        spec.get("attacher", ""),
        (spec.get("source") or {}).get("persistentVolumeName") or "",
        spec.get("nodeName", ""),
        bool(_status(obj).get("attached", False)),
        _age(obj),
    ]


def _volumeattributesclass(obj: Obj) -> list[Any]:
    return [_meta(obj).get("name"), obj.get("driverName", ""), _age(obj)]


# -- scheduling, node, admission, flow control, aggregation -------------------------------------


def _priorityclass(obj: Obj) -> list[Any]:
    return [
        _meta(obj).get("name"),
        int(obj.get("value") or 0),
        bool(obj.get("globalDefault", False)),
        _age(obj),
        obj.get("preemptionPolicy") or "<unset>",
    ]


def _runtimeclass(obj: Obj) -> list[Any]:
    return [_meta(obj).get("name"), obj.get("handler", ""), _age(obj)]


def _webhooks(obj: Obj) -> list[Any]:
    return [_meta(obj).get("name"), len(obj.get("webhooks") or ()), _age(obj)]


def _admissionpolicy(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    kind = spec.get("paramKind")
    shown = f"{kind.get('apiVersion', '')}/{kind.get('kind', '')}" if kind else "<unset>"
    return [_meta(obj).get("name"), len(spec.get("validations") or ()), shown, _age(obj)]


def _mutatingpolicy(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    kind = spec.get("paramKind")
    shown = f"{kind.get('apiVersion', '')}/{kind.get('kind', '')}" if kind else "<unset>"
    return [_meta(obj).get("name"), len(spec.get("mutations") or ()), shown, _age(obj)]


def _policybinding(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    ref = spec.get("paramRef")
    shown = "<unset>"
    if ref:
        if ref.get("name"):
            shown = f"{ref.get('namespace') or '*'}/{ref['name']}"
        elif ref.get("selector") is not None:
            shown = _selector(ref["selector"]).replace("<none>", "")
    return [_meta(obj).get("name"), spec.get("policyName", ""), shown, _age(obj)]


def _flowschema(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    method = (spec.get("distinguisherMethod") or {}).get("type") or "<none>"
    dangling = next(
        (c.get("status", "") for c in _status(obj).get("conditions") or ()
         if c.get("type") == "Dangling"),
        "?",
    )  # fmt: skip
    return [
        _meta(obj).get("name"),
        (spec.get("priorityLevelConfiguration") or {}).get("name", ""),
        int(spec.get("matchingPrecedence") or 0),
        method,
        _age(obj),
        dangling,
    ]


def _prioritylevel(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    limited = spec.get("limited")
    shares: Any = "<none>"
    queues: Any = "<none>"
    hand: Any = "<none>"
    length: Any = "<none>"
    if limited is not None:
        shares = int(limited.get("nominalConcurrencyShares") or 0)
        queuing = (limited.get("limitResponse") or {}).get("queuing")
        if queuing is not None:
            queues = int(queuing.get("queues") or 0)
            hand = int(queuing.get("handSize") or 0)
            length = int(queuing.get("queueLengthLimit") or 0)
    return [_meta(obj).get("name"), spec.get("type", ""), shares, queues, hand, length, _age(obj)]


def _apiservice(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    service = spec.get("service")
    shown = f"{service.get('namespace', '')}/{service.get('name', '')}" if service else "Local"
    available = "Unknown"
    for condition in _status(obj).get("conditions") or ():
        if condition.get("type") == "Available":
            status, reason = condition.get("status", ""), condition.get("reason", "")
            available = status if status == "True" or not reason else f"{status} ({reason})"
            break
    return [_meta(obj).get("name"), shown, available, _age(obj)]


# -- resource.k8s.io (dynamic resource allocation) ---------------------------------------------


def _resourceclaim(obj: Obj) -> list[Any]:
    status, deleted = _status(obj), bool(_meta(obj).get("deletionTimestamp"))
    states = ["deleted"] if deleted else []
    if not status.get("allocation"):
        if not deleted:
            states.append("pending")
    else:
        states.append("allocated")
        if status.get("reservedFor"):
            states.append("reserved")
        elif deleted:
            states.append("deallocating")
    return [_meta(obj).get("name"), ",".join(states), _age(obj)]


def _resourceslice(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    return [
        _meta(obj).get("name"),
        spec.get("nodeName") or "<none>",
        spec.get("driver", ""),
        (spec.get("pool") or {}).get("name", ""),
        _age(obj),
    ]


_BINDING = Printer(
    [Column("Role"), AGE, Column("Users", priority=1), Column("Groups", priority=1),
     Column("ServiceAccounts", priority=1)],
    _binding,
)  # fmt: skip
_WEBHOOKS = Printer([Column("Webhooks", "integer"), AGE], _webhooks)

PLATFORM_PRINTERS: dict[tuple[str, str], Printer] = {
    ("", "endpoints"): Printer([Column("Endpoints"), AGE], _endpoints),
    ("", "podtemplates"): Printer(
        [Column("Containers"), Column("Images"), Column("Pod Labels")], _podtemplate
    ),
    ("", "replicationcontrollers"): Printer(
        [Column("Desired", "integer"), Column("Current", "integer"), Column("Ready", "integer"),
         AGE, Column("Containers", priority=1), Column("Images", priority=1),
         Column("Selector", priority=1)],
        _replicationcontroller,
    ),
    ("", "resourcequotas"): Printer(
        [Column("Request"), Column("Limit"), AGE], _resourcequota
    ),
    ("apps", "controllerrevisions"): Printer(
        [Column("Controller"), Column("Revision", "integer"), AGE], _controllerrevision
    ),
    ("autoscaling", "horizontalpodautoscalers"): Printer(
        [Column("Reference"), Column("Targets"), Column("MinPods"),
         Column("MaxPods", "integer"), Column("Replicas", "integer"), AGE],
        _hpa,
    ),
    ("policy", "poddisruptionbudgets"): Printer(
        [Column("Min Available"), Column("Max Unavailable"),
         Column("Allowed Disruptions", "integer"), AGE],
        _pdb,
    ),
    ("certificates.k8s.io", "certificatesigningrequests"): Printer(
        [AGE, Column("SignerName"), Column("Requestor"), Column("RequestedDuration"),
         Column("Condition")],
        _csr,
    ),
    ("coordination.k8s.io", "leases"): Printer([Column("Holder"), AGE], _lease),
    ("discovery.k8s.io", "endpointslices"): Printer(
        [Column("AddressType"), Column("Ports"), Column("Endpoints"), AGE], _endpointslice
    ),
    ("networking.k8s.io", "ingressclasses"): Printer(
        [Column("Controller"), Column("Parameters"), AGE], _ingressclass
    ),
    ("networking.k8s.io", "ipaddresses"): Printer([Column("ParentRef")], _ipaddress),
    ("networking.k8s.io", "networkpolicies"): Printer(
        [Column("Pod-Selector"), AGE], _networkpolicy
    ),
    ("networking.k8s.io", "servicecidrs"): Printer([Column("CIDRs"), AGE], _servicecidr),
    ("rbac.authorization.k8s.io", "rolebindings"): _BINDING,
    ("rbac.authorization.k8s.io", "clusterrolebindings"): _BINDING,
    ("storage.k8s.io", "storageclasses"): Printer(
        [Column("Provisioner"), Column("ReclaimPolicy"), Column("VolumeBindingMode"),
         Column("AllowVolumeExpansion", "boolean"), AGE],
        _storageclass,
    ),
    ("storage.k8s.io", "csidrivers"): Printer(
        [Column("AttachRequired", "boolean"), Column("PodInfoOnMount", "boolean"),
         Column("StorageCapacity", "boolean"), Column("TokenRequests"),
         Column("RequiresRepublish", "boolean"), Column("Modes"), AGE],
        _csidriver,
    ),
    ("storage.k8s.io", "csinodes"): Printer([Column("Drivers", "integer"), AGE], _csinode),
    ("storage.k8s.io", "volumeattachments"): Printer(
        [Column("Attacher"), Column("PV"), Column("Node"), Column("Attached", "boolean"), AGE],
        _volumeattachment,
    ),
    ("storage.k8s.io", "volumeattributesclasses"): Printer(
        [Column("DriverName"), AGE], _volumeattributesclass
    ),
    ("scheduling.k8s.io", "priorityclasses"): Printer(
        [Column("Value", "integer"), Column("Global-Default", "boolean"), AGE,
         Column("PreemptionPolicy")],
        _priorityclass,
    ),
    ("node.k8s.io", "runtimeclasses"): Printer([Column("Handler"), AGE], _runtimeclass),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): _WEBHOOKS,
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): _WEBHOOKS,
    ("admissionregistration.k8s.io", "validatingadmissionpolicies"): Printer(
        [Column("Validations", "integer"), Column("ParamKind"), AGE], _admissionpolicy
    ),
    ("admissionregistration.k8s.io", "mutatingadmissionpolicies"): Printer(
        [Column("Mutations", "integer"), Column("ParamKind"), AGE], _mutatingpolicy
    ),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"): Printer(
        [Column("PolicyName"), Column("ParamRef"), AGE], _policybinding
    ),
    ("admissionregistration.k8s.io", "mutatingadmissionpolicybindings"): Printer(
        [Column("PolicyName"), Column("ParamRef"), AGE], _policybinding
    ),
    ("flowcontrol.apiserver.k8s.io", "flowschemas"): Printer(
        [Column("PriorityLevel"), Column("MatchingPrecedence", "integer"),
         Column("DistinguisherMethod"), AGE, Column("MissingPL")],
        _flowschema,
    ),
    ("flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations"): Printer(
        [Column("Type"), Column("NominalConcurrencyShares"), Column("Queues"),
         Column("HandSize"), Column("QueueLengthLimit"), AGE],
        _prioritylevel,
    ),
    ("apiregistration.k8s.io", "apiservices"): Printer(
        [Column("Service"), Column("Available"), AGE], _apiservice
    ),
    ("resource.k8s.io", "deviceclasses"): Printer([AGE], name_age),
    ("resource.k8s.io", "resourceclaimtemplates"): Printer([AGE], name_age),
    ("resource.k8s.io", "resourceclaims"): Printer([Column("State"), AGE], _resourceclaim),
    ("resource.k8s.io", "resourceslices"): Printer(
        [Column("Node"), Column("Driver"), Column("Pool"), AGE], _resourceslice
    ),
}  # fmt: skip
