"""bench/fleet.py keeps running: two members and 3,000 objects on PostgreSQL, figures as JSON.

The benchmark itself checks that every member's objects are stored (per cluster, exactly) and
that the watcher receives every change it made; here the figures are checked for what they
must say whatever the machine. No timing is asserted; the full run is the README command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clusterpedia.testing.databases import require_server

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fleet.py"


def run_bench(*args: str) -> dict[str, float]:
    """The benchmark's figures (it fails on a lost object or event by itself)."""
    require_server("postgresql")
    done = subprocess.run(
        [sys.executable, str(BENCH), *args, "--json"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def test_fleet_benchmark_syncs_every_member_and_prints_its_figures(assets) -> None:  # type: ignore[no-untyped-def]
    rate, seconds = 100, 2
    figures = run_bench(
        "--members", "2", "--objects", "3000", "--requests", "10", "--rate", str(rate),
        "--lag-seconds", str(seconds), "--throughput-seconds", "3",
    )  # fmt: skip
    assert figures["members"] == 2
    assert figures["objects"] == 3000
    assert figures["watch_events"] == rate * seconds  # every change seen through our watch
    assert figures["objects_per_s"] * figures["initial_sync_s"] == pytest.approx(3000, rel=0.01)
    for key in (
        "seed_s",
        "cpu_s_per_1k_ours",
        "cpu_s_per_1k_database",
        "cpu_s_per_1k_members",
        "rss_quarter_mb",
        "rss_half_mb",
        "rss_full_mb",
        "db_bytes_per_object",
        "page_c1_p50_ms",
        "deep_page_c16_p99_ms",
        "label_c1_p50_ms",
        "get_c16_rps",
        "watch_lag_p99_ms",
        "events_per_s",
    ):
        assert figures[key] > 0, key
    assert figures["rss_peak_mb"] >= figures["rss_full_mb"]
    assert figures["watch_lag_p50_ms"] <= figures["watch_lag_p99_ms"]


def test_fleet_benchmark_with_sharded_replicas_reports_shares_and_failover(assets) -> None:  # type: ignore[no-untyped-def]
    """``--replicas 2``: two replicas with --sharding share four members; one is killed."""
    figures = run_bench(
        "--members", "4", "--objects", "2000", "--replicas", "2", "--requests", "5",
        "--rate", "50", "--lag-seconds", "1", "--throughput-seconds", "2",
    )  # fmt: skip
    assert figures["replicas"] == 2
    # Four clusters of equal size over two replicas: two each, so exactly half the objects.
    assert figures["replica_0_share_pct"] == figures["replica_1_share_pct"] == 50
    assert figures["share_max_deviation_pct"] == 0
    assert figures["failover_clusters"] == 2  # the killed replica's, synced again elsewhere
    for key in ("replica_0_cpu_s", "replica_1_cpu_s", "failover_s", "events_per_s"):
        assert figures[key] > 0, key
