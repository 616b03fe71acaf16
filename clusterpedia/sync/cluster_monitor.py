"""A member's health, as the synchro acts on it: probes, the healthy/unhealthy verdict, and
the record every replica's API reads (its warning on clusters whose data may be stale)."""

from __future__ import annotations

import logging
from typing import Literal

from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.storage import Catalog

logger = logging.getLogger(__name__)

Change = Literal["healthy", "unhealthy"]


class ClusterMonitor:
    """``/readyz`` (``/healthz`` on old members) and ``/version``; ``failures_to_unhealthy``
    failed probes in a row make the cluster unhealthy, one good probe healthy again."""

    def __init__(
        self, name: str, client: KubeClient, catalog: Catalog, *, failures_to_unhealthy: int
    ):
        self.name = name
        self.client = client
        self.catalog = catalog
        self.failures_to_unhealthy = failures_to_unhealthy
        self.healthy: bool | None = None  # None: not probed since the synchro (re)started
        self.message = ""
        self.version = ""
        self._failures = 0

    def forget(self) -> None:
        """Back to not probed (the synchro's loop restarts)."""
        self.healthy = None

    async def probe(self) -> bool:
        try:
            status, body = await self.client.get_text("/readyz")
            if status == 404:
                status, body = await self.client.get_text("/healthz")
            if status != 200:
                self.message = f"/readyz answered {status}: {body.strip()[:200]}"
                return False
            if not self.version:
                self.version = str((await self.client.get("/version")).get("gitVersion", ""))
            self.message = ""
            return True
        except KubeError as error:
            self.message = str(error)
            return False

    def observe(self, ok: bool) -> Change | None:
        """Count a probe's outcome; the verdict when it changes."""
        self._failures = 0 if ok else self._failures + 1
        if ok and self.healthy is not True:
            self.healthy = True
            return "healthy"
        if not ok and self._failures >= self.failures_to_unhealthy and self.healthy is not False:
            self.healthy = False
            return "unhealthy"
        return None

    async def publish(self) -> None:
        """Record the verdict for every replica's API."""
        try:
            await self.catalog.set_health(
                self.name,
                healthy=bool(self.healthy),
                reason="" if self.healthy else self.message[:500],
            )
        except Exception as error:  # the next health change records it again
            logger.warning("cluster %s: could not record its health: %s", self.name, error)
