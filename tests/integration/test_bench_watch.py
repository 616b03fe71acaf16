"""bench/watch.py keeps running: a tiny run on SQLite prints every figure as JSON.

No timing is asserted (figures vary by machine); the full run is the README command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "watch.py"


def test_watch_benchmark_prints_its_figures_as_json(assets) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run(
        [sys.executable, str(BENCH), "--database", "sqlite", "--seconds", "1",
         "--idle", "20", "--active", "3", "--rate", "50", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["idle_watchers"] == 20 and figures["active_watchers"] == 3
    assert figures["events"] == 50 * 3  # every watcher got every change
    assert figures["delivered_ratio"] == 1 and figures["expired_watchers"] == 0
    for key in ("idle_rss_mb", "active_rss_mb", "latency_p50_ms"):
        assert figures[key] > 0, key
    assert figures["idle_cpu_pct"] >= 0 and figures["active_cpu_pct"] > 0
    assert figures["latency_p99_ms"] >= figures["latency_p50_ms"]
