"""Load and chaos in CI: ``bench/chaos.py`` at a reduced size on PostgreSQL.

(It ran on MariaDB too, 110 s more of CI. What is MariaDB's own in it, an outage of the
database mid-sync and mid-query, runs on both servers in tests/e2e/test_database_faults.py, both
by a cut proxy and by a real restart; the rest is the product's, the same on either.)

16 clients page through 4,000 objects for 20 s while two real members churn; then member 5xx,
truncated JSON, a slow member, a database outage and ``kill -9`` follow one another, 4 s each.
Every object of both members is then compared with its stored row. The full run (100,000
objects, 5 minutes of load) is the README command; no timing is asserted here, only that no
client failed under load and that nothing was lost.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clusterpedia.testing.databases import require_server

BENCH = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_load_then_faults_lose_nothing(assets, dialect: str) -> None:  # type: ignore[no-untyped-def]
    require_server(dialect)
    done = subprocess.run(
        [sys.executable, str(BENCH), "--database", dialect, "--objects", "4000",
         "--load-seconds", "20", "--fault-seconds", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    figures = json.loads(done.stdout) if done.stdout.strip() else {}
    assert done.returncode == 0, (figures, done.stderr[-3000:])
    assert figures["faults"] == 5  # member 5xx, truncated JSON, slow; database; kill -9
    assert figures["load_errors"] == 0 and figures["load_pages"] > 0
    assert figures["objects_compared"] > 2000
    assert figures["losses"] == figures["extras"] == figures["log_gaps"] == 0
    assert figures["page_p99_ms"] >= figures["page_p50_ms"] > 0
    assert figures["rss_end_mb"] > 0
    print(json.dumps(figures))  # shown in the closing note
