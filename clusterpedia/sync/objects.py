"""What happens to a member object between the member's JSON and the stored row."""

from __future__ import annotations

from typing import Any

from clusterpedia.gvr import ResourceType
from clusterpedia.storage import CLUSTER_ANNOTATION, Upsert, upsert_from_object

# Served objects carry the global resourceVersion; the member's own is kept here.
MEMBER_RV_ANNOTATION = "shadow.clusterpedia.io/member-resource-version"
# Set on Secrets stored without their values (the default; --store-secret-data keeps them).
DATA_OMITTED_ANNOTATION = "shadow.clusterpedia.io/data-omitted"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return (metadata.get("namespace") or "", metadata.get("name") or "")


def prepare(
    obj: dict[str, Any],
    *,
    cluster: str,
    rtype: ResourceType,
    is_new: bool = False,
    keep_secret_data: bool = False,
) -> Upsert:
    """Strip what nobody searches (managedFields, the last-applied copy of the object), mark
    the cluster and the member's resourceVersion, drop the values of Secrets (unless
    ``keep_secret_data``), restore apiVersion/kind (list items omit them), and derive the
    row."""
    obj["apiVersion"] = rtype.api_version
    obj["kind"] = rtype.kind
    metadata = obj.setdefault("metadata", {})
    metadata.pop("managedFields", None)
    annotations = metadata.get("annotations") or {}
    annotations.pop(LAST_APPLIED, None)
    annotations[CLUSTER_ANNOTATION] = cluster
    annotations[MEMBER_RV_ANNOTATION] = metadata.get("resourceVersion") or ""
    if rtype.group == "" and rtype.resource == "secrets" and not keep_secret_data:
        # An inventory of every cluster must not become a copy of every credential: the
        # values are dropped before anything is stored, logged or served.
        obj.pop("data", None)
        obj.pop("stringData", None)
        annotations[DATA_OMITTED_ANNOTATION] = "true"
    metadata["annotations"] = annotations
    return upsert_from_object(obj, is_new=is_new)
