"""The original's import policies, as pure decisions: which source objects a
ClusterImportPolicy selects, the PediaClusterLifecycle each gets, and the PediaCluster a
lifecycle renders (``policy.clusterpedia.io/v1alpha1``; the host I/O is in
``operator/import_policies.py``).

Templates are Go templates over ``.source`` (the source object) and ``.references.<key>``
(the objects its references name). As in the original, ``<no value>`` renders as nothing, and
a condition or selector is true when it renders, trimmed and lower-cased, to ``true``.

Each render has a budget (``gotemplate.Budget``) and is CPU work: the operator runs these
decisions off the event loop. What they report never quotes what a template rendered (a
reference may be a Secret): a name that is not valid, YAML that does not parse, are described
by position and reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from clusterpedia.gotemplate import NO_VALUE, BudgetExceeded, TemplateError, check, render
from clusterpedia.yamlerror import yaml_problem

POLICY_GROUP, POLICY_VERSION = "policy.clusterpedia.io", "v1alpha1"
POLICY_LABEL = "policy.clusterpedia.io/cluster-import-policy"
# What a lifecycle keeps up to date on its PediaCluster after creating it (the original's).
AUTH_FIELDS = ("apiserver", "caData", "tokenData", "certData", "keyData", "kubeconfig")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


class PolicyError(ValueError):
    """A policy or lifecycle that cannot be used as written; ``reason`` for its condition."""

    def __init__(self, message: str, *, reason: str = "InvalidTemplate"):
        super().__init__(message)
        self.reason = reason


def rendered(template: str, data: Mapping[str, Any]) -> str:
    try:
        return render(template, data).replace(NO_VALUE, "")
    except BudgetExceeded as error:
        raise PolicyError(str(error), reason="TemplateBudgetExceeded") from None
    except TemplateError as error:
        raise PolicyError(str(error)) from None


def valid_name(text: str) -> bool:
    """A DNS subdomain: what an object name (and so a path segment) may be; never ``.``."""
    return len(text) <= 253 and _NAME.fullmatch(text) is not None


def holds(template: str, data: Mapping[str, Any]) -> bool:
    """A condition template's verdict; an empty template holds."""
    return not template.strip() or rendered(template, data).strip().lower() == "true"


@dataclass(frozen=True)
class Source:
    group: str
    resource: str
    versions: tuple[str, ...] = ()
    selector: str = ""


def policy_source(spec: Mapping[str, Any]) -> Source:
    """The policy's source, its templates checked."""
    source = spec.get("source") or {}
    if not isinstance(source, Mapping) or not source.get("resource"):
        raise PolicyError("spec.source.resource is required")
    for key in ("nameTemplate", "template", "creationCondition"):
        if not isinstance(spec.get(key, ""), str):
            raise PolicyError(f"spec.{key} must be a string")
    for template in (
        source.get("selectorTemplate") or "",
        spec.get("nameTemplate") or "",
        spec.get("template") or "",
        spec.get("creationCondition") or "",
        *(r.get(k) or "" for r in spec.get("references") or () for k in _REFERENCE_TEMPLATES),
    ):
        try:
            check(str(template))
        except TemplateError as error:
            raise PolicyError(str(error)) from None
    if not spec.get("nameTemplate"):
        raise PolicyError("spec.nameTemplate is required")
    return Source(
        group=str(source.get("group") or ""),
        resource=str(source["resource"]),
        versions=tuple(str(v) for v in source.get("versions") or ()),
        selector=str(source.get("selectorTemplate") or ""),
    )


_REFERENCE_TEMPLATES = ("namespaceTemplate", "nameTemplate")


def lifecycle_for(
    policy: Mapping[str, Any], source: Source, version: str, obj: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The PediaClusterLifecycle the policy wants for ``obj``; None when its selector leaves
    it out. Raises :class:`PolicyError` for a name that is not a valid object name."""
    spec = policy.get("spec") or {}
    data = {"source": obj}
    if not holds(source.selector, data):
        return None
    name = rendered(str(spec.get("nameTemplate") or ""), data).strip()
    if not valid_name(name):
        raise PolicyError(
            f"nameTemplate does not render a valid object name ({len(name)} characters; "
            "a DNS subdomain is required)",
            reason="InvalidName",
        )
    metadata = obj.get("metadata") or {}
    policy_meta = policy.get("metadata") or {}
    return {
        "apiVersion": f"{POLICY_GROUP}/{POLICY_VERSION}",
        "kind": "PediaClusterLifecycle",
        "metadata": {
            "name": name,
            "labels": {POLICY_LABEL: str(policy_meta.get("name", ""))},
            "ownerReferences": [
                {
                    "apiVersion": f"{POLICY_GROUP}/{POLICY_VERSION}",
                    "kind": "ClusterImportPolicy",
                    "name": policy_meta.get("name", ""),
                    "uid": policy_meta.get("uid", ""),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "source": {
                "group": source.group,
                "version": version,
                "resource": source.resource,
                "namespace": metadata.get("namespace") or "",
                "name": metadata.get("name", ""),
            },
            "references": [
                {
                    "key": str(reference.get("key", "")),
                    "group": str(reference.get("group") or ""),
                    "version": str((reference.get("versions") or [""])[0] or ""),
                    "resource": str(reference.get("resource", "")),
                    "namespaceTemplate": str(reference.get("namespaceTemplate") or ""),
                    "nameTemplate": str(reference.get("nameTemplate") or ""),
                }
                for reference in spec.get("references") or ()
            ],
            "template": str(spec.get("template") or ""),
            "creationCondition": str(spec.get("creationCondition") or ""),
        },
    }


@dataclass(frozen=True)
class Reference:
    key: str
    group: str
    version: str
    resource: str
    namespace: str
    name: str


def references_of(spec: Mapping[str, Any], source: Mapping[str, Any]) -> list[Reference]:
    """Where each of a lifecycle's references points, for this source object."""
    data = {"source": source}
    found = []
    for reference in spec.get("references") or ():
        key = str(reference.get("key", ""))
        name = rendered(str(reference.get("nameTemplate") or ""), data).strip()
        namespace = rendered(str(reference.get("namespaceTemplate") or ""), data).strip()
        if not key or not name:
            raise PolicyError(f"reference {key or '?'} renders no name")
        if not valid_name(name) or (namespace and not valid_name(namespace)):
            raise PolicyError(
                f"reference {key} does not render a valid object name and namespace "
                "(DNS subdomains)",
                reason="InvalidName",
            )
        found.append(
            Reference(
                key=key,
                group=str(reference.get("group") or ""),
                version=str(reference.get("version") or ""),
                resource=str(reference.get("resource", "")),
                namespace=namespace,
                name=name,
            )
        )
    return found


def pediacluster_spec(
    spec: Mapping[str, Any], source: Mapping[str, Any], references: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The PediaCluster spec a lifecycle renders; None while its creationCondition is not
    true."""
    data = {"source": source, "references": dict(references)}
    if not holds(str(spec.get("creationCondition") or ""), data):
        return None
    text = rendered(str(spec.get("template") or ""), data)
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise PolicyError(f"template does not render YAML: {yaml_problem(error)}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("spec"), Mapping):
        raise PolicyError("template must render a mapping with a spec")
    return dict(document["spec"])


def auth_changes(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The credential fields of ``wanted`` that differ from ``current`` (a merge patch)."""
    return {k: wanted.get(k) for k in AUTH_FIELDS if current.get(k) != wanted.get(k)}


def condition(kind: str, ok: bool, reason: str, message: str = "") -> dict[str, str]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message[:1000],
    }


def stale(names: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """The lifecycles a policy has that it no longer wants."""
    keep = set(wanted)
    return sorted(n for n in names if n not in keep)
