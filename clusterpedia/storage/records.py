"""What the storage is given: row values derived once from member objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

# Every stored object carries its cluster here, as the original writes it.
CLUSTER_ANNOTATION = "shadow.clusterpedia.io/cluster-name"


@dataclass(frozen=True, slots=True)
class Upsert:
    """Store this object (unless the stored row already has its resourceVersion)."""

    namespace: str
    name: str
    uid: str
    owner_uid: str
    resource_version: str  # the member's, compared on relist
    created_at: datetime
    deleted_at: datetime | None
    labels: bytes | None  # JSON of metadata.labels, None when there are none
    object: bytes  # the JSON served back, once the writer stamps the global resourceVersion
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


_RV_FIELD = b'"resourceVersion":"'


def as_bytes(data: Any) -> bytes:
    """A stored object as bytes, whatever the driver returned (text, bytes, memoryview)."""
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        return data.encode()
    return bytes(data)


def encode_object(obj: dict[str, Any]) -> bytes:
    """The JSON to store for ``obj``, with an empty ``metadata.resourceVersion`` placed before
    anything that could contain the same text (apiVersion, kind, then metadata starting with
    resourceVersion), so :func:`stamp_resource_version` finds it in the first bytes."""
    metadata = {"resourceVersion": ""}
    metadata.update((k, v) for k, v in obj["metadata"].items() if k != "resourceVersion")
    head = {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", "")}
    rest = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    return orjson.dumps({**head, "metadata": metadata, **rest})


def stamp_resource_version(data: bytes, rv: int) -> bytes:
    """``data`` (written by :func:`encode_object`, possibly stamped before) with its
    ``metadata.resourceVersion`` set to the global ``rv``: two slices, no parse."""
    start = data.find(_RV_FIELD)
    if start < 0:
        raise ValueError("object was not encoded by encode_object: no resourceVersion field")
    start += len(_RV_FIELD)
    end = data.index(b'"', start)
    return b"%s%d%s" % (data[:start], rv, data[end:])


def upsert_from_object(obj: dict[str, Any], *, is_new: bool = False) -> Upsert:
    """Derive the row of one object; its stored JSON gets the global resourceVersion later,
    when the writer assigns it."""
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
        object=encode_object(obj),
        is_new=is_new,
    )
