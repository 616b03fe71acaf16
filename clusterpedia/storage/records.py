"""What the storage is given: resource types and row values derived once from member objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson


def group_version(group: str, version: str) -> str:
    """``apps/v1``, or ``v1`` for the core group: an apiVersion or a discovery groupVersion."""
    return f"{group}/{version}" if group else version


@dataclass(frozen=True, slots=True)
class ResourceType:
    """A synced resource type in its storage version, e.g. apps/v1 deployments (Deployment)."""

    group: str
    version: str
    resource: str
    kind: str

    @property
    def api_version(self) -> str:
        return group_version(self.group, self.version)

    def __str__(self) -> str:
        return (
            f"{self.resource}.{self.version}.{self.group}"
            if self.group
            else f"{self.resource}.{self.version}"
        )


@dataclass(frozen=True, slots=True)
class Upsert:
    """Store this object (unless the stored row already has its resourceVersion)."""

    namespace: str
    name: str
    uid: str
    owner_uid: str
    resource_version: str
    created_at: datetime
    deleted_at: datetime | None
    labels: bytes | None  # JSON of metadata.labels, None when there are none
    object: bytes  # the JSON served back, byte for byte
    # True when the caller knows no row exists for this object yet (a relist item missing from
    # the stored map): the writer then skips cleaning up old label-index rows.
    is_new: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove this object's row."""

    namespace: str
    name: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


Change = Upsert | Delete

_EPOCH = datetime(1970, 1, 1)


def parse_timestamp(value: str | None) -> datetime | None:
    """A Kubernetes RFC 3339 timestamp as a naive UTC datetime (how every dialect stores it)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def controller_uid(metadata: dict[str, Any]) -> str:
    """The UID of the controller ownerReference, or "" (only controllers are searchable)."""
    for reference in metadata.get("ownerReferences") or ():
        if reference.get("controller"):
            return str(reference.get("uid", ""))
    return ""


def upsert_from_object(
    obj: dict[str, Any], *, encoded: bytes | None = None, is_new: bool = False
) -> Upsert:
    """Derive the row of one object; ``encoded`` is its JSON if the caller already has it."""
    metadata = obj["metadata"]
    labels = metadata.get("labels")
    return Upsert(
        namespace=metadata.get("namespace") or "",
        name=metadata["name"],
        uid=metadata.get("uid") or "",
        owner_uid=controller_uid(metadata),
        resource_version=metadata.get("resourceVersion") or "",
        created_at=parse_timestamp(metadata.get("creationTimestamp")) or _EPOCH,
        deleted_at=parse_timestamp(metadata.get("deletionTimestamp")),
        labels=orjson.dumps(labels, option=orjson.OPT_SORT_KEYS) if labels else None,
        object=encoded if encoded is not None else orjson.dumps(obj),
        is_new=is_new,
    )
