"""bench/api.py keeps running: a small run on SQLite prints every figure as JSON.

No timing is asserted (figures vary by machine), but the figures must be plausible: consistent
with each other and within what a process can do. The full run is the README command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "api.py"


def test_api_benchmark_prints_its_figures_as_json(assets) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--pods",
            "2000",
            "--database",
            "sqlite",
            "--requests",
            "5",
            "--settle-seconds",
            "0.5",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["full_list_mb_per_s"] > 0
    for request in ("page", "deep_page", "get", "label"):
        for concurrency in (1, 16):
            for figure in ("p50_ms", "p99_ms", "rps"):
                assert figures[f"{request}_c{concurrency}_{figure}"] > 0
        prefix = f"{request}_c1_"
        assert figures[prefix + "p50_ms"] <= figures[prefix + "p99_ms"], request
        # One request at a time: the rate and the median latency describe the same requests.
        assert 0.2 < figures[prefix + "rps"] * figures[prefix + "p50_ms"] / 1000 < 5, request
    for moment in ("idle", "after", "settled", "peak"):
        assert 20 < figures[f"server_rss_{moment}_mb"] < 8192, moment
    assert figures["server_rss_peak_mb"] >= figures["server_rss_after_mb"]
