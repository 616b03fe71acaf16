"""The read-replica pieces that need no second server: the lag measured on the change log,
readiness from it, a replica's wait for a resourceVersion it has not applied, and the Status
that answers one it never reaches (tests/integration/test_read_replica.py runs the real
PostgreSQL standby)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from clusterpedia.apiserver.chain import too_large
from clusterpedia.apiserver.replica import LagMonitor
from clusterpedia.storage import (
    Database,
    Marks,
    Query,
    ReplicaLag,
    ResourceVersionTooLarge,
    StorageUnavailable,
    TypeFilter,
    measure_lag,
)
from clusterpedia.storage.reader import encode_token


class FakeLog:
    """The two reads the lag needs, from fixed values (or failing like a database down)."""

    def __init__(self, head: int, logged: dict[int, datetime] | None = None, down: bool = False):
        self.head, self.logged, self.down = head, logged or {}, down

    async def marks(self) -> Marks:
        if self.down:
            raise StorageUnavailable("connection refused")
        return Marks(head=self.head, pruned=0)

    async def logged_after(self, rv: int) -> datetime | None:
        later = sorted(r for r in self.logged if r > rv)
        return self.logged[later[0]] if later else None


def ago(seconds: float) -> datetime:
    return datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=seconds)


@pytest.mark.asyncio
async def test_the_lag_is_the_age_of_the_oldest_change_the_replica_lacks() -> None:
    primary: Any = FakeLog(12, {10: ago(40), 11: ago(9), 12: ago(1)})
    lag = await measure_lag(primary=primary, replica=FakeLog(10))  # type: ignore[arg-type]
    assert lag.resource_versions == 2
    assert 8.5 < lag.seconds < 10  # rv 11's age, not rv 10's (the replica has that one)
    current = await measure_lag(primary=primary, replica=FakeLog(12))  # type: ignore[arg-type]
    assert (current.resource_versions, current.seconds) == (0, 0.0)
    pruned = await measure_lag(primary=FakeLog(12), replica=FakeLog(3))  # type: ignore[arg-type]
    assert pruned.seconds == math.inf


@pytest.mark.asyncio
async def test_readiness_fails_beyond_the_max_lag_and_not_when_the_primary_is_down() -> None:
    replica: Any = FakeLog(5)
    monitor = LagMonitor(primary=FakeLog(6, {6: ago(3)}), replica=replica, max_lag=30)  # type: ignore[arg-type]
    assert (await monitor.measure()) is not None and monitor.problem() == ""
    monitor.max_lag = 1
    assert "read replica is 3." in monitor.problem() and "(1 changes)" in monitor.problem()
    monitor.primary = FakeLog(0, down=True)  # type: ignore[assignment]
    assert (await monitor.measure()) is None
    assert monitor.problem() == ""  # reads are still served from what the replica holds


@pytest.mark.asyncio
async def test_a_replica_waits_for_a_continue_tokens_resource_version(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await database.migrate()
    await database.close()
    replica = Database(f"sqlite:///{tmp_path / 'db.sqlite'}", replica=True)
    with pytest.raises(RuntimeError, match="migrated through its primary"):
        await replica.migrate()
    assert not replica.changes.pushes
    reader = replica.objects
    assert await reader.catch_up(0, timeout=0.1) == 0
    with pytest.raises(ResourceVersionTooLarge) as raised:
        await reader.catch_up(7, timeout=0.2)
    assert (raised.value.requested, raised.value.current) == (7, 0)
    pods = [TypeFilter(group="", version="v1", resource="pods")]
    token = encode_token(Query(types=pods, limit=1).fingerprint(), ["c", "ns", "n"], 7)
    with pytest.raises(ResourceVersionTooLarge):  # after CATCH_UP_SECONDS
        await reader.list(Query(types=pods, limit=1, continue_token=token))
    await replica.close()


def test_too_large_is_kube_apiservers_retryable_timeout() -> None:
    error = too_large(ResourceVersionTooLarge(9, 4))
    body = orjson.loads(error.response().body)  # type: ignore[arg-type]
    assert (body["code"], body["reason"]) == (504, "Timeout")
    assert body["message"] == "Too large resource version: 9, current: 4"
    assert body["details"]["causes"] == [
        {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
    ]
    assert error.headers == {"Retry-After": "1"}


def test_lag_counts_no_negative_changes() -> None:
    assert ReplicaLag(primary_head=3, replica_head=5, seconds=0).resource_versions == 0
