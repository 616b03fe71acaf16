"""bench/storage.py keeps running: a small run on SQLite prints every figure as JSON.

No timing is asserted here (figures vary by machine), but the figures must be plausible:
consistent with each other and within what the machine can physically do. The benchmark itself
is run from the README command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "storage.py"


def test_storage_benchmark_prints_its_figures_as_json() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "4000", "--databases", "sqlite", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    for key in (
        "sqlite_write_rows_per_s",
        "sqlite_floor_rows_per_s",
        "sqlite_write_ratio",
        "sqlite_first_page_p50_ms",
        "sqlite_deep_page_p50_ms",
        "sqlite_owner_uid_p50_ms",
        "sqlite_label_selector_p50_ms",
        "sqlite_scan_mb_per_s",
    ):
        assert figures[key] > 0, key
    rate, floor = figures["sqlite_write_rows_per_s"], figures["sqlite_floor_rows_per_s"]
    assert figures["sqlite_write_ratio"] == pytest.approx(rate / floor, rel=0.05)  # rounded
    # A write path far faster than the raw driver's bulk insert did not write what it says.
    assert figures["sqlite_write_ratio"] < 5
    assert rate * figures["sqlite_first_page_p50_ms"] > 0  # both measured
    for key in ("sqlite_first_page_p50_ms", "sqlite_deep_page_p50_ms"):
        assert figures[key] < 60_000, key  # a page of 4,000 rows within a minute
