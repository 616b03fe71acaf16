"""Names of Kubernetes resource types, shared by member access, storage and the API server."""

from __future__ import annotations

from dataclasses import dataclass


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
