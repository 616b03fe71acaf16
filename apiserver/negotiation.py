"""Content negotiation: which representation of a result the client's Accept header asks for.

kubectl asks for ``application/json;as=Table;v=v1;g=meta.k8s.io`` for human output, the
metadata client for ``as=PartialObjectMetadataList``, discovery clients for
``as=APIGroupDiscoveryList``; everything else gets plain JSON. Protobuf is never offered, so a
client that accepts only protobuf gets 406.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .status import StatusError


class Form(enum.Enum):
    JSON = "json"
    TABLE = "table"
    METADATA = "metadata"  # PartialObjectMetadata(List)
    DISCOVERY_V2 = "discovery-v2"
    DISCOVERY_V2BETA1 = "discovery-v2beta1"


@dataclass(frozen=True, slots=True)
class MediaRange:
    type: str
    params: dict[str, str] = field(default_factory=dict)


def parse_accept(header: str) -> list[MediaRange]:
    ranges = []
    for item in header.split(","):
        pieces = [p.strip() for p in item.split(";")]
        if not pieces[0]:
            continue
        params = {}
        for piece in pieces[1:]:
            key, _, value = piece.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        ranges.append(MediaRange(type=pieces[0].lower(), params=params))
    return ranges


_JSON_TYPES = {"application/json", "application/*", "*/*"}


def negotiate(header: str | None, *, allowed: set[Form]) -> Form:
    """The first form in the client's order that this endpoint can produce."""
    if not header:
        return Form.JSON
    for media in parse_accept(header):
        if media.type not in _JSON_TYPES:
            continue
        as_ = media.params.get("as")
        group, version = media.params.get("g"), media.params.get("v")
        if as_ is None:
            return Form.JSON
        wanted = None
        if as_ == "Table" and group == "meta.k8s.io" and version in ("v1", "v1beta1"):
            wanted = Form.TABLE
        elif (
            as_ in ("PartialObjectMetadata", "PartialObjectMetadataList")
            and group == "meta.k8s.io"
            and version in ("v1", "v1beta1")
        ):
            wanted = Form.METADATA
        elif as_ == "APIGroupDiscoveryList" and group == "apidiscovery.k8s.io":
            wanted = {"v2": Form.DISCOVERY_V2, "v2beta1": Form.DISCOVERY_V2BETA1}.get(version or "")
        if wanted in allowed:
            return wanted
    raise StatusError(406, "only the following media types are accepted: application/json")
