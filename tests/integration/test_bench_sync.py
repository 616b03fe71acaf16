"""bench/sync.py keeps running: a tiny run on SQLite prints every figure as JSON.

No timing is asserted (figures vary by machine), but the figures must be plausible: consistent
with each other and within what a process can do. The full run is the README command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sync.py"


def test_sync_benchmark_prints_its_figures_as_json(assets) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--scale",
            "0.02",
            "--database",
            "sqlite",
            "--lag-seconds",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["objects"] == 500
    for key in (
        "floor_list_s",
        "initial_sync_s",
        "sync_ratio",
        "rss_n_mb",
        "rss_2n_mb",
        "lag_p50_ms",
        "lag_p99_ms",
        "sync_cpu_us_per_object",
        "event_cpu_us",
    ):
        assert figures[key] > 0, key
    ratio = figures["initial_sync_s"] / figures["floor_list_s"]
    assert figures["sync_ratio"] == pytest.approx(ratio, rel=0.05)  # figures are rounded
    # Storing every object cannot take less than a fifth of merely listing them.
    assert figures["sync_ratio"] > 0.2
    assert figures["lag_p50_ms"] <= figures["lag_p99_ms"]
    for key in ("rss_n_mb", "rss_2n_mb"):
        assert 20 < figures[key] < 8192, key  # a Python process with its libraries loaded
