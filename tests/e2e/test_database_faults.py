"""Database faults, on PostgreSQL and MariaDB: the database goes away under a running
``clusterpedia run`` (through a TCP proxy the test cuts: every connection reset, new ones
refused) while a member churns and clients query. While it is down, queries fail fast with a 503
``Status`` and ``/readyz`` says not ready; once it is back, both recover by themselves, sync
resumes and converges to the member with nothing lost, and no connection is left stuck."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml
from clusterpedia.apiserver.testing import PREFIX
from sqlalchemy.engine import make_url

from clusterpedia.testing.consistency import (
    ConfigMapChurn,
    change_log_report,
    converged,
    seed_configmaps,
    stored_state,
)
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.databases import fresh_database, require_server
from clusterpedia.testing.faults import TcpProxy
from clusterpedia.testing.objects import configmaps_of, pediacluster
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually

OUTAGE_SECONDS = 8


def query(product: ProductProcess, host: APIServer, path: str) -> tuple[int, bytes, float]:
    """Status code, body and seconds taken of a GET as the host's aggregation layer."""
    request = urllib.request.Request(
        product.url + path, headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"}
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(
            request, context=product.front_proxy_context(host), timeout=30
        ) as response:
            return response.status, response.read(), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, error.read(), time.monotonic() - started


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_database_outage_fails_fast_and_loses_nothing(
    host: APIServer, member_clusters: list[APIServer], tmp_path: Path, dialect: str
) -> None:
    require_server(dialect)
    member = member_clusters[1]
    namespace = cluster = f"dbfault-{dialect}"
    asyncio.run(seed_configmaps(member, namespace, 300))
    with fresh_database(dialect, label="dbfault") as url:
        real = make_url(url)
        assert real.host is not None and real.port is not None
        proxy = TcpProxy(real.host, real.port).start()
        proxied = real.set(port=proxy.port).render_as_string(hide_password=False)
        product = ProductProcess(
            workdir=tmp_path, kubeconfig=host.kubeconfig, storage_url=proxied
        ).start()
        listing = f"{PREFIX}/clusters/{cluster}/api/v1/namespaces/{namespace}/configmaps?limit=50"
        spec = pediacluster(
            cluster,
            member.kubeconfig.read_bytes(),
            configmaps_of(namespace),
        )
        try:
            host.kubectl("apply", "-f", "-", input=yaml.safe_dump(spec))
            eventually(
                lambda: converged(url, cluster, member, namespace), timeout=60, what="synced"
            )
            outage: list[tuple[int, bytes, float]] = []
            with ConfigMapChurn([member], namespace) as churn:
                time.sleep(2)
                proxy.cut()
                deadline = time.monotonic() + OUTAGE_SECONDS
                while time.monotonic() < deadline:
                    outage.append(query(product, host, listing))
                    time.sleep(0.5)
                ready_while_down = query(product, host, "/readyz")[0]
                proxy.restore()
                eventually(
                    lambda: query(product, host, listing)[0] == 200,
                    timeout=30,
                    what="queries recover by themselves",
                )
                time.sleep(2)
            assert churn.changes > 50
            eventually(
                lambda: converged(url, cluster, member, namespace),
                timeout=90,
                what="sync resumes and converges after the outage",
            )
            # While down: every query a 503 Status, fast; not ready.
            assert outage and {code for code, _, _ in outage} == {503}, outage
            assert max(seconds for _, _, seconds in outage) < 5, outage
            status = orjson.loads(outage[-1][1])
            assert (status["kind"], status["reason"]) == ("Status", "ServiceUnavailable")
            assert ready_while_down != 200
            assert query(product, host, "/readyz")[0] == 200
            # Nothing lost, nothing twice, no gap in the log, no connection left stuck.
            stored, rows = asyncio.run(stored_state(url, cluster))
            assert rows == len(stored)
            rvs, head, pruned, replayed = asyncio.run(change_log_report(url, cluster))
            assert rvs == list(range(pruned + 1, head + 1))
            assert replayed == stored
            assert proxy.connections <= 40, f"{proxy.connections} database connections open"
            print(
                f"{dialect}: {len(outage)} queries during a {OUTAGE_SECONDS} s outage, all 503, "
                f"slowest {max(s for _, _, s in outage) * 1000:.0f} ms; {churn.changes} member "
                f"changes; {len(stored)} objects equal; log 1..{head} without gaps; "
                f"{proxy.connections} connections after"
            )  # shown in the closing note
        finally:
            host.kubectl("delete", "pediacluster", cluster, "--timeout=60s", check=False)
            product.stop()
            proxy.close()
            member.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
