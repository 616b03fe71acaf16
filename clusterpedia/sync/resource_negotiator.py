"""Which of a member's resource types to sync: its discovery resolved against the
PediaCluster's syncResources, and the chosen types recorded in the catalog for every replica's
discovery, with their Table columns: a CRD's additionalPrinterColumns, or for a built-in type
the column definitions the member's own Table answer has (names, types, descriptions and
priorities as kube-apiserver prints them; our printers compute the cells)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.kube.discovery import discover, is_builtin_group
from clusterpedia.storage import Catalog, PrinterColumn, SyncedType
from clusterpedia.sync.targets import SyncResourcesError, SyncTarget, resolve_sync_resources

logger = logging.getLogger(__name__)
LEASES = ("coordination.k8s.io", "leases")


class ResourceNegotiator:
    def __init__(
        self,
        name: str,
        client: KubeClient,
        catalog: Catalog,
        sync_resources: Sequence[Mapping[str, Any]],
        *,
        all_custom_resources: bool = False,
        ignore_leases: bool = False,
    ):
        self.name = name
        self.client = client
        self.catalog = catalog
        self.sync_resources = list(sync_resources)
        self.all_custom_resources = all_custom_resources
        self.ignore_leases = ignore_leases
        self.sync_error = ""  # syncResources cannot be resolved against the member
        self.warnings: list[str] = []  # entries that name nothing the member serves
        self._chosen: list[SyncTarget] | None = None  # the last negotiation's answer
        # built-in types' Table columns, read once per type: they change with the member's
        # version only, and a fleet's discovery rounds must not re-read them
        self._member_columns: dict[tuple[str, str, str], tuple[PrinterColumn, ...]] = {}
        self._published: list[SyncedType] | None = None

    async def negotiate(self) -> list[SyncTarget] | None:
        """The types to sync now; None when discovery failed (the workers then stay as they
        are).

        When syncResources does not resolve (a typo, or a group whose only CRD was deleted)
        the error is reported and the types chosen before stay, less those the member no
        longer serves: a deleted CRD's rows go with it. A type whose group/version's
        discovery failed (an aggregated API that is down) keeps its worker.
        """
        try:
            discovery = await discover(self.client)
        except KubeError as error:
            logger.warning("cluster %s: discovery failed: %s", self.name, error)
            return None
        chosen = self._chosen or []
        try:
            targets, warnings = resolve_sync_resources(
                discovery, self.sync_resources, all_custom_resources=self.all_custom_resources
            )
        except SyncResourcesError as error:
            self.sync_error = str(error)
            if self._chosen is None:
                return None  # nothing chosen by this process yet: leave the catalog alone
            targets = [t for t in chosen if discovery.serves(t.rtype) is not False]
        else:
            self.sync_error = ""
            self.warnings = warnings
            if self.ignore_leases:
                targets = [t for t in targets if (t.rtype.group, t.rtype.resource) != LEASES]
            resolved = {t.rtype for t in targets}
            targets += [
                t for t in chosen if t.rtype not in resolved and discovery.serves(t.rtype) is None
            ]
        self._chosen = targets
        return targets

    async def publish(self, targets: Sequence[SyncTarget]) -> None:
        """Record what this cluster syncs, for every replica's discovery."""
        columns = await self._printer_columns(targets)
        types = [
            SyncedType(
                cluster=self.name,
                group=t.rtype.group,
                version=t.rtype.version,
                resource=t.rtype.resource,
                kind=t.rtype.kind,
                namespaced=t.namespaced,
                singular=t.singular,
                short_names=t.short_names,
                categories=t.categories,
                printer_columns=columns.get((t.rtype.group, t.rtype.version, t.rtype.resource), ()),
            )
            for t in targets
        ]
        if types == self._published:
            return
        try:
            await self.catalog.replace(self.name, types)
            self._published = types
        except Exception as error:  # retried at the next discovery round
            logger.warning("cluster %s: could not record its resource types: %s", self.name, error)

    async def _printer_columns(
        self, targets: Sequence[SyncTarget]
    ) -> dict[tuple[str, str, str], tuple[PrinterColumn, ...]]:
        """Each synced custom resource's additionalPrinterColumns for its synced version, read
        from one list of the member's CRDs, and each built-in type's Table columns."""
        columns: dict[tuple[str, str, str], tuple[PrinterColumn, ...]] = {}
        for target in targets:
            if is_builtin_group(target.rtype.group):
                columns[_key(target)] = await self._builtin_columns(target)
        if all(is_builtin_group(t.rtype.group) for t in targets):
            return columns
        try:
            crds = await self.client.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        except KubeError:
            return columns  # not readable with these credentials: default columns
        return {**printer_columns(crds.get("items") or ()), **columns}

    async def _builtin_columns(self, target: SyncTarget) -> tuple[PrinterColumn, ...]:
        key = _key(target)
        if key not in self._member_columns:
            try:
                self._member_columns[key] = await member_columns(self.client, target)
            except KubeError as error:  # tried again at the next discovery round
                logger.info("cluster %s: no Table columns for %s: %s", self.name, key, error)
                return ()
        return self._member_columns[key]


TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


async def member_columns(client: KubeClient, target: SyncTarget) -> tuple[PrinterColumn, ...]:
    """The column definitions of the member's own Table for ``target`` (no jsonPath: these
    columns are computed, by kube-apiserver's printers there and ours here)."""
    table = await client.get(
        target.path, params={"limit": "1", "includeObject": "None"}, accept=TABLE
    )
    return tuple(
        PrinterColumn(
            name=str(c.get("name", "")),
            type=str(c.get("type", "string")),
            json_path="",
            description=str(c.get("description", "")),
            format=str(c.get("format", "")),
            priority=int(c.get("priority", 0)),
        )
        for c in table.get("columnDefinitions") or ()
    )


def _key(target: SyncTarget) -> tuple[str, str, str]:
    return (target.rtype.group, target.rtype.version, target.rtype.resource)


def printer_columns(
    crds: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str, str], tuple[PrinterColumn, ...]]:
    """(group, version, plural) -> the additionalPrinterColumns of that CRD version."""
    columns: dict[tuple[str, str, str], tuple[PrinterColumn, ...]] = {}
    for crd in crds:
        spec = crd.get("spec") or {}
        plural = (spec.get("names") or {}).get("plural", "")
        for version in spec.get("versions") or ():
            columns[(spec.get("group", ""), version.get("name", ""), plural)] = tuple(
                PrinterColumn(
                    name=str(c.get("name", "")),
                    type=str(c.get("type", "string")),
                    json_path=str(c.get("jsonPath", "")),
                    description=str(c.get("description", "")),
                    format=str(c.get("format", "")),
                    priority=int(c.get("priority", 0)),
                )
                for c in version.get("additionalPrinterColumns") or ()
                if c.get("name") and c.get("jsonPath")
            )
    return columns
