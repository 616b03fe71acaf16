"""Crash safety, on every database: ``kill -9`` of ``clusterpedia run`` in the middle of a large
initial sync and again during steady churn. After each restart the database converges to
exactly the member's state (every object's member resourceVersion), with no duplicates and no
lost deletes; the change log has no gaps, and replaying it gives the stored state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from clusterpedia.testing.consistency import (
    ConfigMapChurn,
    change_log_report,
    converged,
    seed_configmaps,
    stored_state,
)
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.objects import configmaps_of, pediacluster
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually

COUNT = 4000


@pytest.fixture(scope="module")
def dialect(database_url: str) -> str:
    return database_url.split(":")[0].split("+")[0].replace("postgresql", "pg")


@pytest.fixture(scope="module")
def member(member_clusters: list[APIServer], dialect: str) -> Iterator[APIServer]:
    member = member_clusters[0]
    namespace = f"crash-{dialect}"
    asyncio.run(seed_configmaps(member, namespace, COUNT))
    yield member
    member.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_kill_9_during_initial_sync_and_churn_loses_nothing(
    host: APIServer, member: APIServer, database_url: str, dialect: str, tmp_path: Path
) -> None:
    namespace, cluster = f"crash-{dialect}", f"crash-{dialect}"
    product = ProductProcess(
        workdir=tmp_path, kubeconfig=host.kubeconfig, storage_url=database_url
    ).start()
    spec = pediacluster(
        cluster,
        member.kubeconfig.read_bytes(),
        configmaps_of(namespace),
    )
    try:
        host.kubectl("apply", "-f", "-", input=yaml.safe_dump(spec))
        # Kill once some pages are stored and others are not.
        deadline = time.monotonic() + 120
        while (rows := asyncio.run(stored_state(database_url, cluster))[1]) < 500:
            assert time.monotonic() < deadline, "the initial sync did not start"
            time.sleep(0.02)
        product.kill()
        rows_at_kill = rows
        assert rows < COUNT, f"the initial sync finished ({rows} rows) before the kill"
        product.start()
        eventually(
            lambda: converged(database_url, cluster, member, namespace),
            timeout=120,
            what="the initial sync converges after kill -9",
        )

        with ConfigMapChurn([member], namespace) as churn:
            eventually(lambda: churn.changes >= 30, what="the members change")
            product.kill()  # mid-churn: batches in flight are lost with the process
            product.start()
            killed_at = churn.changes
            eventually(lambda: churn.changes >= killed_at + 30, what="changes after the restart")
        assert churn.changes > 50
        eventually(
            lambda: converged(database_url, cluster, member, namespace),
            timeout=120,
            what="the database converges after kill -9 during churn",
        )
        stored, rows = asyncio.run(stored_state(database_url, cluster))
        assert rows == len(stored), "no duplicate rows"
        rvs, head, pruned, replayed = asyncio.run(change_log_report(database_url, cluster))
        assert rvs == list(range(pruned + 1, head + 1)), "the change log has no gaps"
        assert pruned == 0 and replayed == stored, "replaying the log gives the stored state"
        print(
            f"{dialect}: killed at {rows_at_kill} of {COUNT} rows and again during "
            f"{churn.changes} member changes; {len(stored)} objects equal; log 1..{head} "
            "without gaps"
        )  # shown in the closing note
    finally:
        host.kubectl("delete", "pediacluster", cluster, "--timeout=60s", check=False)
        product.stop()
