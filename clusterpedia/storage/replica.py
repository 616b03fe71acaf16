"""How far a read replica is behind its primary, measured on the change log both share.

Every write lands in the log with a dense resourceVersion and the time it was logged, so the
lag needs nothing from the database's own replication views (which differ between PostgreSQL
and MySQL, and read zero on an idle standby that is in fact current): it is the primary's
head minus the replica's, and the age of the oldest change the replica has not applied yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from clusterpedia.storage.port import Changes


@dataclass(frozen=True, slots=True)
class ReplicaLag:
    primary_head: int
    replica_head: int
    seconds: float  # the age of the oldest change the replica lacks; 0 when it has them all

    @property
    def resource_versions(self) -> int:
        return max(0, self.primary_head - self.replica_head)


async def measure_lag(*, primary: Changes, replica: Changes) -> ReplicaLag:
    """The replica's lag now. The replica is read first: what the primary holds by then is at
    least what the replica could have, so the lag is never negative."""
    replica_head = (await replica.marks()).head
    primary_head = (await primary.marks()).head
    if primary_head <= replica_head:
        return ReplicaLag(primary_head, replica_head, 0.0)
    logged = await primary.logged_after(replica_head)
    if logged is None:  # every change it lacks is pruned already: older than any we keep
        return ReplicaLag(primary_head, replica_head, float("inf"))
    age = datetime.now(UTC).replace(tzinfo=None) - logged
    return ReplicaLag(primary_head, replica_head, max(0.0, age.total_seconds()))
