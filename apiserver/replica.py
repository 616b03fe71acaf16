"""Follow a read replica's lag behind the primary: a metric, and what ``/readyz`` says.

Measured every ``interval`` seconds on the change log (``storage/replica.py``). A replica
more than ``max_lag`` seconds behind fails readiness, so the Service sends clients to a
replica that is current. The primary being unreachable does not: reads are still served, from
what the replica holds, and the lag is reported as unknown (NaN) until it can be measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

from prometheus_client import Gauge

from clusterpedia.storage import Changes, ReplicaLag, StorageError, measure_lag

logger = logging.getLogger(__name__)

LAG_SECONDS = Gauge(
    "clusterpedia_read_storage_lag_seconds",
    "Age of the oldest change the read replica has not applied (NaN: the primary is unreachable).",
)
LAG_RESOURCE_VERSIONS = Gauge(
    "clusterpedia_read_storage_lag_resource_versions",
    "Changes the primary holds that the read replica has not applied yet.",
)


class LagMonitor:
    def __init__(
        self, *, primary: Changes, replica: Changes, max_lag: float, interval: float = 1.0
    ):
        self.primary = primary
        self.replica = replica
        self.max_lag = max_lag
        self.interval = interval
        self.latest: ReplicaLag | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def measure(self) -> ReplicaLag | None:
        try:
            lag = await measure_lag(primary=self.primary, replica=self.replica)
        except StorageError as error:
            if not self._failing:
                logger.warning("cannot measure the read replica's lag: %s", error)
            self._failing = True
            self.latest = None
            LAG_SECONDS.set(math.nan)
            return None
        if self._failing:
            logger.info("read replica lag measured again: %.1fs", lag.seconds)
        self._failing = False
        self.latest = lag
        LAG_SECONDS.set(lag.seconds)
        LAG_RESOURCE_VERSIONS.set(lag.resource_versions)
        return lag

    def problem(self) -> str:
        """Why the replica should not serve now ("" when it may)."""
        lag = self.latest
        if lag is None or lag.seconds <= self.max_lag:
            return ""
        return (
            f"the read replica is {lag.seconds:.1f}s ({lag.resource_versions} changes) behind "
            f"the primary (--read-storage-max-lag {self.max_lag:g}s)"
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="read replica lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self) -> None:
        while True:
            await self.measure()
            await asyncio.sleep(self.interval)
