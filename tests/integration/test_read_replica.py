"""Reads from real replicas, started here on loopback: a PostgreSQL streaming replica
(``pg_basebackup`` + a hot standby) and a MariaDB replica (binary log replication). Lists,
gets and watches are served from the standby, writes go
to the primary, the lag shows in ``/metrics`` and ``/readyz``, and a client never reads older
than it already has (a continue token or watch resourceVersion the standby has not applied
waits for it, then gets kube-apiserver's 504 ``ResourceVersionTooLarge``).

The standby's replay is paused to make it fall behind on purpose: the primary's log still
arrives, it is just not applied until resumed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from clusterpedia.apiserver.testing import PREFIX, ServerThread, parse, start_server
from clusterpedia.testing.aggregation import service_account_token
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.dbservers import (
    PrivateMariaDBPrimary,
    PrivateMariaDBReplica,
    PrivatePostgres,
    PrivateServer,
    PrivateStandby,
)
from clusterpedia.testing.store import Store
from clusterpedia.testing.waiting import eventually

PODS_PATH = f"{PREFIX}/api/v1/namespaces/watch/pods"
LATE_POD = f"{PREFIX}/clusters/r1/api/v1/namespaces/watch/pods/late"
MAX_LAG = 2.0  # seconds: readiness fails beyond it
Standby = PrivateStandby | PrivateMariaDBReplica


@pytest.fixture(scope="module", params=["postgresql", "mysql"])
def primary(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    server = PrivatePostgres() if request.param == "postgresql" else PrivateMariaDBPrimary()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def store(primary: PrivateServer) -> Iterator[Store]:
    store = Store(primary.url, clusters=["r1"])  # migrated before the standby is cloned
    yield store
    store.close()


@pytest.fixture(scope="module")
def standby(primary: PrivateServer, store: Store) -> Iterator[Standby]:
    server: Standby
    if isinstance(primary, PrivatePostgres):
        server = PrivateStandby(primary)
    else:
        assert isinstance(primary, PrivateMariaDBPrimary)
        server = PrivateMariaDBReplica(primary)
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def token(aggregator: APIServer) -> str:
    return service_account_token(aggregator, "replica-reader", reader=True)


@pytest.fixture(scope="module")
def metrics_token(aggregator: APIServer) -> str:
    token = service_account_token(aggregator, "replica-metrics", reader=False)
    aggregator.kubectl(
        "create", "clusterrole", "metrics-reader", "--verb=get", "--non-resource-url=/metrics",
        check=False,
    )  # fmt: skip
    aggregator.kubectl(
        "create", "clusterrolebinding", "replica-metrics", "--clusterrole=metrics-reader",
        "--serviceaccount=tokens:replica-metrics", check=False,
    )  # fmt: skip
    return token


def _server(
    aggregator: APIServer, tmp: pytest.TempPathFactory, url: str, **config: Any
) -> Iterator[ServerThread]:
    thread = start_server(
        aggregator, url, cert_dir=str(tmp.mktemp("certs")), watch_poll_interval=0.05, **config
    )
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def server(
    aggregator: APIServer,
    primary: PrivateServer,
    standby: Standby,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerThread]:
    """Reads from the standby."""
    yield from _server(
        aggregator,
        tmp_path_factory,
        primary.url,
        read_storage_url=standby.url,
        read_storage_max_lag=MAX_LAG,
    )


@pytest.fixture(scope="module")
def on_primary(
    aggregator: APIServer, primary: PrivateServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """Another replica of ours, reading from the primary: always ahead of a paused standby."""
    yield from _server(aggregator, tmp_path_factory, primary.url)


@pytest.fixture
def paused(standby: Standby) -> Iterator[Standby]:
    standby.pause_replay()
    try:
        yield standby
    finally:
        standby.resume_replay()


def names(server: ServerThread, token: str, query: str = "") -> list[str]:
    status, _, body = server.request(PODS_PATH + query, token=token)
    assert status == 200, body
    return [item["metadata"]["name"] for item in parse(body)["items"]]


def metric(server: ServerThread, name: str, token: str) -> float:
    status, _, body = server.request("/metrics", token=token)
    assert status == 200, body
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def test_reads_come_from_the_standby_and_its_lag_is_reported(
    server: ServerThread, store: Store, standby: Standby, metrics_token: str, token: str
) -> None:
    store.put("r1", "early", rv=1)
    eventually(lambda: names(server, token) == ["early"], timeout=30)
    assert server.request("/readyz")[0] == 200

    standby.pause_replay()
    try:
        store.put("r1", "late", rv=2)  # on the primary only, until replay resumes
        time.sleep(0.5)
        assert names(server, token) == ["early"]  # so the list was read from the standby
        assert server.request(LATE_POD, token=token)[0] == 404
        eventually(
            lambda: (
                metric(server, "clusterpedia_read_storage_lag_resource_versions", metrics_token)
                >= 1
            ),
            timeout=10,
        )

        def unready() -> bool:
            status, _, body = server.request("/readyz")
            return status == 503 and b"read replica is" in body

        eventually(unready, timeout=MAX_LAG + 10)
        assert metric(server, "clusterpedia_read_storage_lag_seconds", metrics_token) > MAX_LAG
    finally:
        standby.resume_replay()
    eventually(lambda: names(server, token) == ["early", "late"], timeout=30)
    eventually(lambda: server.request("/readyz")[0] == 200, timeout=10)
    assert metric(server, "clusterpedia_read_storage_lag_seconds", metrics_token) == 0
    status, _, body = server.request(LATE_POD, token=token)
    assert status == 200 and parse(body)["metadata"]["name"] == "late"


def test_a_watch_through_the_standby_follows_the_primarys_writes(
    server: ServerThread, store: Store, token: str
) -> None:
    status, _, body = server.request(PODS_PATH, token=token)
    assert status == 200
    since = parse(body)["metadata"]["resourceVersion"]
    events: list[dict[str, Any]] = []
    watching = threading.Thread(
        target=lambda: events.extend(
            watch(server, token, f"{PODS_PATH}?watch=true&resourceVersion={since}", until=2)
        ),
        daemon=True,
    )
    watching.start()
    store.put("r1", "watched", rv=3)
    store.delete("r1", "watched")
    watching.join(30)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "watched"),
        ("DELETED", "watched"),
    ]
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) > int(since)


def watch(server: ServerThread, token: str, path: str, *, until: int) -> list[dict[str, Any]]:
    """The first ``until`` events of a watch (read line by line as they arrive)."""
    import urllib.request

    request = urllib.request.Request(
        server.url + path + "&timeoutSeconds=25", headers={"Authorization": f"Bearer {token}"}
    )
    events = []
    with urllib.request.urlopen(request, context=server.ssl_context(), timeout=30) as response:
        for line in response:
            event = parse(line)
            if event["type"] != "BOOKMARK":
                events.append(event)
            if len(events) >= until:
                break
    return events


def test_a_client_never_reads_older_than_it_has(
    server: ServerThread, on_primary: ServerThread, store: Store, paused: Standby, token: str
) -> None:
    """A first page from a server on the primary, the next from one on the lagging standby."""
    for index in range(3):
        store.put("r1", f"page-{index}", rv=10 + index, namespace="pages")
    path = f"{PREFIX}/api/v1/namespaces/pages/pods"
    status, _, body = on_primary.request(f"{path}?limit=1", token=token)
    assert status == 200, body
    first = parse(body)["metadata"]
    newer = int(first["resourceVersion"])

    next_page = f"{path}?limit=1&continue={first['continue']}"
    started = time.monotonic()
    status, headers, body = server.request(next_page, token=token)
    assert time.monotonic() - started >= 2.5  # it waited for the standby first
    assert status == 504, body
    answer = parse(body)
    assert answer["reason"] == "Timeout" and headers["Retry-After"] == "1"
    assert answer["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
    status, _, body = server.request(f"{PODS_PATH}?watch=true&resourceVersion={newer}", token=token)
    assert status == 504 and b"Too large resource version" in body

    # Caught up within the wait: the page is served, from the rows the token continues.
    resumed = threading.Timer(0.5, paused.resume_replay)
    resumed.start()
    status, _, body = server.request(next_page, token=token)
    resumed.join()
    assert status == 200, body
    page = parse(body)
    assert [item["metadata"]["name"] for item in page["items"]] == ["page-1"]
    assert page["metadata"]["resourceVersion"] == str(newer)
