"""Database faults, on PostgreSQL and MariaDB: the database goes away under a running
``clusterpedia run`` while a member churns and clients query. Two ways: a TCP proxy the test
cuts (every connection reset, new ones refused), and a real restart of a private server
(PostgreSQL's fast shutdown, MariaDB's normal one: the server ends every session itself).

While it is down, queries fail fast with a 503 ``Status`` and ``/readyz`` says not ready; once
it is back, both recover by themselves, sync resumes and converges to the member with nothing
lost, and no connection is left stuck."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import yaml
from sqlalchemy.engine import make_url

from clusterpedia.apiserver.testing import PREFIX
from clusterpedia.testing.consistency import (
    ConfigMapChurn,
    change_log_report,
    converged,
    seed_configmaps,
    stored_state,
)
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.databases import fresh_database, require_server
from clusterpedia.testing.dbservers import PrivateMariaDB, PrivatePostgres, PrivateServer
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


@dataclass
class Outage:
    """How the test takes the database away and brings it back."""

    url: str  # the database as the test reads it
    product_url: str  # the database as the product reaches it
    down: Callable[[], None]
    up: Callable[[], None]
    connections: Callable[[], int]  # the product's connections to it


@contextlib.contextmanager
def proxy_cut(dialect: str) -> Iterator[Outage]:
    with fresh_database(dialect, label="dbfault") as url:
        real = make_url(url)
        assert real.host is not None and real.port is not None
        proxy = TcpProxy(real.host, real.port).start()
        try:
            proxied = real.set(port=proxy.port).render_as_string(hide_password=False)
            yield Outage(url, proxied, proxy.cut, proxy.restore, lambda: proxy.connections)
        finally:
            proxy.close()


@contextlib.contextmanager
def server_restart(dialect: str) -> Iterator[Outage]:
    server: PrivateServer = PrivatePostgres() if dialect == "postgresql" else PrivateMariaDB()
    with server:
        yield Outage(server.url, server.url, server.stop, server.start, server.client_connections)


@pytest.mark.parametrize("kind", ["proxy-cut", "server-restart"])
@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_database_outage_fails_fast_and_loses_nothing(
    host: APIServer, member_clusters: list[APIServer], tmp_path: Path, dialect: str, kind: str
) -> None:
    require_server(dialect)
    member = member_clusters[1]
    namespace = cluster = f"dbfault-{dialect}-{kind}"
    asyncio.run(seed_configmaps(member, namespace, 300))
    outages = proxy_cut if kind == "proxy-cut" else server_restart
    with outages(dialect) as outage:
        url = outage.url
        product = ProductProcess(
            workdir=tmp_path, kubeconfig=host.kubeconfig, storage_url=outage.product_url
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
            outage_answers: list[tuple[int, bytes, float]] = []
            with ConfigMapChurn([member], namespace) as churn:
                time.sleep(2)
                outage.down()
                deadline = time.monotonic() + OUTAGE_SECONDS
                while time.monotonic() < deadline:
                    outage_answers.append(query(product, host, listing))
                    time.sleep(0.5)
                ready_while_down = query(product, host, "/readyz")[0]
                outage.up()
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
            codes = {code for code, _, _ in outage_answers}
            assert outage_answers and codes == {503}, outage_answers
            slowest = max(seconds for _, _, seconds in outage_answers)
            assert slowest < 5, outage_answers
            status = orjson.loads(outage_answers[-1][1])
            assert (status["kind"], status["reason"]) == ("Status", "ServiceUnavailable")
            assert ready_while_down != 200
            assert query(product, host, "/readyz")[0] == 200
            # Nothing lost, nothing twice, no gap in the log, no connection left stuck.
            stored, rows = asyncio.run(stored_state(url, cluster))
            assert rows == len(stored)
            rvs, head, pruned, replayed = asyncio.run(change_log_report(url, cluster))
            assert rvs == list(range(pruned + 1, head + 1))
            assert replayed == stored
            connections = outage.connections()
            assert connections <= 40, f"{connections} database connections open"
            print(
                f"{dialect} {kind}: {len(outage_answers)} queries during a {OUTAGE_SECONDS} s "
                f"outage, all 503, slowest {slowest * 1000:.0f} ms; {churn.changes} member "
                f"changes; {len(stored)} objects equal; log 1..{head} without gaps; "
                f"{connections} connections after"
            )  # shown in the closing note
        finally:
            host.kubectl("delete", "pediacluster", cluster, "--timeout=60s", check=False)
            product.stop()
            member.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
