"""Sync benchmark: a member cluster's objects into the database, against real processes.

    python bench/sync.py                         # 20,000 ConfigMaps + 5,000 Pods, PostgreSQL
    python bench/sync.py --scale 0.1 --database sqlite --json

It starts etcd, a member and a host kube-apiserver, seeds the member, then measures:

- the floor: a plain paginated list of the same objects over HTTP, 500 per page, read as bytes
  as ``kubectl get --raw`` does (``sync_ratio`` is against this one), and the same list decoded
  into Python objects, the least a sync in Python must spend (``sync_ratio_parsed``);
- initial sync: from applying the PediaCluster to the last row stored (``sync_ratio`` =
  sync/floor, target <= 2.5 on PostgreSQL, issue 14);
- peak RSS (VmHWM) of the ``clusterpedia run`` process (operator, workers and API server, run
  as users run it, in its own process) after N objects, and after 2N;
- CPU per object of the initial sync, ours (the ``clusterpedia run`` process) and the
  database's (every ``postgres``/``mariadbd`` process, with its ended backends);
- event lag p50/p99: member PATCH -> row updated in the database, at 200 updates/s;
- CPU per watch event, ours and the database's, at the same rate with nothing else running.

``--profile DIR`` samples the product with py-spy during the initial sync and the event phase
(``DIR/sync.txt``, ``DIR/events.txt``: collapsed stacks, the top frames printed at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from clusterpedia.kube.access import access_from_kubeconfig
from clusterpedia.kube.client import KubeClient
from clusterpedia.process import tune_garbage_collector
from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.schema import HEAD, change_log_marks, resources
from clusterpedia.testing.benchmarks import (
    DATABASE_PROCESSES,
    benchmark_parser,
    cpu_seconds,
    operator_host,
    peak_rss_mb,
    percentile,
    print_figures,
    processes_cpu_seconds,
    profile_summary,
    profiled,
    quiet_product,
    wait_operator_ready,
)
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.databases import fresh_database
from clusterpedia.testing.objects import pediacluster, realistic_pod

CONCURRENCY = 32


def configmap(index: int, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"cm-{index:06d}",
            "namespace": namespace,
            "labels": {"app": f"a{index % 100}"},
        },
        "data": {f"key-{n}": f"value-{index}-{n}-" + "x" * 80 for n in range(18)},  # ~2 KB
    }


def pod(index: int, namespace: str) -> dict[str, Any]:
    body = realistic_pod(index)
    body["metadata"] = {
        "name": f"pod-{index:06d}",
        "namespace": namespace,
        "labels": body["metadata"]["labels"],
    }
    body.pop("status")
    return body


async def seed(member: APIServer, namespace: str, configmaps: int, pods: int) -> None:
    """Create the objects with concurrent POSTs (kubectl would take minutes)."""
    member.kubectl("create", "namespace", namespace)
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    for i in range(configmaps):
        queue.put_nowait((f"/api/v1/namespaces/{namespace}/configmaps", configmap(i, namespace)))
    for i in range(pods):
        queue.put_nowait((f"/api/v1/namespaces/{namespace}/pods", pod(i, namespace)))
    async with KubeClient(access_from_kubeconfig(member.kubeconfig.read_bytes())) as kube:

        async def worker() -> None:
            while not queue.empty():
                path, body = queue.get_nowait()
                await kube.post(path, body)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def floor_seconds(member: APIServer, *, parse: bool) -> float:
    """A plain paginated list of the same objects, 500 per page: the median of three.

    ``parse=False`` reads each page's bytes as ``kubectl get --raw`` does (the continue token
    is read from the head of the body); ``parse=True`` also decodes every page into Python
    objects, which any sync written in Python must do at least."""
    async with KubeClient(access_from_kubeconfig(member.kubeconfig.read_bytes())) as kube:
        session = kube._ensure_session()

        async def raw_pages(path: str) -> None:
            token = ""
            while True:
                params = {"limit": "500", **({"continue": token} if token else {})}
                async with session.get(kube._url(path), params=params) as response:
                    body = await response.read()
                head = body[: body.find(b'"items":')].rstrip(b",") + b"}"
                token = orjson.loads(head)["metadata"].get("continue", "")
                if not token:
                    return

        timings = []
        for _ in range(3):
            started = time.perf_counter()
            for path in ("/api/v1/configmaps", "/api/v1/pods"):
                if parse:
                    async for _ in kube.list_pages(path, limit=500):
                        pass
                else:
                    await raw_pages(path)
            timings.append(time.perf_counter() - started)
        return statistics.median(timings)


async def count_rows(engine: Any, cluster: str) -> int:
    async with engine.connect() as connection:
        query = (
            sa.select(sa.func.count())
            .select_from(resources)
            .where(resources.c.cluster == cluster, resources.c.namespace.like("bench%"))
        )
        return int((await connection.execute(query)).scalar_one())


async def log_head(engine: Any) -> int:
    async with engine.connect() as connection:
        query = sa.select(change_log_marks.c.rv).where(change_log_marks.c.name == HEAD)
        return int((await connection.execute(query)).scalar() or 0)


async def wait_rows(engine: Any, cluster: str, expected: int, timeout: float = 900) -> float:
    """Wait until ``expected`` rows are stored. The change log's head (one row, read for
    nothing) is polled until it could be so; only then are rows counted, so that the waiting
    does not add its own scans to the database's CPU figure."""
    started = time.perf_counter()
    while True:
        if await log_head(engine) >= expected and await count_rows(engine, cluster) >= expected:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"sync did not reach {expected} rows")
        await asyncio.sleep(0.05)


NAMES = [f"cm-{i:06d}" for i in range(100)]


async def patch_at_rate(
    member: APIServer,
    rate: int,
    seconds: float,
    sent: dict[tuple[str, int], float],
    *,
    first_seq: int = 0,
) -> None:
    """PATCH ``rate`` of the first 100 ConfigMaps per second, noting when each was sent."""
    async with KubeClient(access_from_kubeconfig(member.kubeconfig.read_bytes())) as kube:
        started = time.perf_counter()
        for seq in range(first_seq, first_seq + int(rate * seconds)):
            await asyncio.sleep(max(0.0, started + (seq - first_seq) / rate - time.perf_counter()))
            name = NAMES[seq % len(NAMES)]
            sent[(name, seq)] = time.perf_counter()
            path = f"/api/v1/namespaces/bench-1/configmaps/{name}"
            await kube.patch(path, {"data": {"seq": str(seq)}})


async def measure_lag(
    member: APIServer, engine: Any, cluster: str, rate: int, seconds: float
) -> list[float]:
    """PATCH ``rate`` ConfigMaps per second; return member-PATCH -> stored lags (seconds)."""
    sent: dict[tuple[str, int], float] = {}
    seen: dict[str, int] = {}
    lags: list[float] = []
    stop = asyncio.Event()

    async def update() -> None:
        await patch_at_rate(member, rate, seconds, sent)
        await asyncio.sleep(3)
        stop.set()

    async def observe() -> None:
        query = sa.select(resources.c.name, resources.c.object).where(
            resources.c.cluster == cluster,
            resources.c.namespace == "bench-1",
            resources.c.name.in_(NAMES),
        )
        while not stop.is_set():
            async with engine.connect() as connection:
                rows = (await connection.execute(query)).all()
            now = time.perf_counter()
            for name, data in rows:
                seq = int((orjson.loads(data).get("data") or {}).get("seq", -1))
                if seq > seen.get(name, -1):
                    seen[name] = seq
                    if (name, seq) in sent:
                        lags.append(now - sent[(name, seq)])
            await asyncio.sleep(0.02)

    await asyncio.gather(update(), observe())
    return lags


async def stored_seqs(engine: Any, cluster: str) -> dict[str, int]:
    """The ``data.seq`` of each of the patched ConfigMaps as stored."""
    query = sa.select(resources.c.name, resources.c.object).where(
        resources.c.cluster == cluster,
        resources.c.namespace == "bench-1",
        resources.c.name.in_(NAMES),
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return {name: int((orjson.loads(data).get("data") or {}).get("seq", -1)) for name, data in rows}


async def event_cpu(
    member: APIServer, engine: Any, pid: int, rate: int, seconds: float
) -> tuple[float, float]:
    """Our CPU and the database's per watch event (microseconds): ``rate`` PATCHes a second
    with nothing else running, then until every ConfigMap is stored with its last PATCH (the
    writer may fold two events of one object in one batch, so the log is not counted)."""
    events = int(rate * seconds)
    ours, database = cpu_seconds(pid), processes_cpu_seconds(*DATABASE_PROCESSES)
    sent: dict[tuple[str, int], float] = {}
    await patch_at_rate(member, rate, seconds, sent, first_seq=1_000_000)  # new values
    last = {name: seq for name, seq in sorted(sent, key=lambda key: key[1])}
    deadline = time.perf_counter() + 120
    while await stored_seqs(engine, "bench") != last:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the last of {events} PATCHes were not all stored")
        await asyncio.sleep(0.1)
    return (
        (cpu_seconds(pid) - ours) * 1e6 / events,
        (processes_cpu_seconds(*DATABASE_PROCESSES) - database) * 1e6 / events,
    )


async def run(args: argparse.Namespace) -> dict[str, float]:
    configmaps, pods = int(20_000 * args.scale), int(5_000 * args.scale)
    figures: dict[str, float] = {"objects": configmaps + pods}
    with ControlPlane() as plane, fresh_database(args.database, label="syncbench") as url:
        member, host = plane.add_apiserver("bench-member"), operator_host(plane)
        print(f"... seeding {configmaps} ConfigMaps and {pods} Pods", file=sys.stderr, flush=True)
        await seed(member, "bench-1", configmaps, pods)
        # The decoding floor gets the garbage-collector tuning `clusterpedia run` uses.
        tune_garbage_collector()
        figures["floor_list_s"] = await floor_seconds(member, parse=False)
        figures["floor_parsed_s"] = await floor_seconds(member, parse=True)

        product = quiet_product(host, url, "sync")
        assert product.process.pid is not None
        pid = product.process.pid
        engine = create_engine(url)
        try:
            wait_operator_ready(host)
            rss_before = peak_rss_mb(pid)
            spec = pediacluster(
                "bench",
                member.kubeconfig.read_bytes(),
                {"group": "", "resources": ["configmaps", "pods"]},
            )
            print("... initial sync", file=sys.stderr, flush=True)
            ours, database = cpu_seconds(pid), processes_cpu_seconds(*DATABASE_PROCESSES)
            started = time.perf_counter()
            with profiled(pid, args.profile and args.profile / "sync.txt"):
                host.kubectl("apply", "-f", "-", input=json.dumps(spec))
                await wait_rows(engine, "bench", configmaps + pods)
            figures["initial_sync_s"] = time.perf_counter() - started
            per_object = 1e6 / (configmaps + pods)
            figures["sync_cpu_us_per_object"] = (cpu_seconds(pid) - ours) * per_object
            figures["db_sync_cpu_us_per_object"] = (
                processes_cpu_seconds(*DATABASE_PROCESSES) - database
            ) * per_object
            figures["sync_ratio"] = figures["initial_sync_s"] / figures["floor_list_s"]
            figures["sync_ratio_parsed"] = figures["initial_sync_s"] / figures["floor_parsed_s"]
            figures["objects_per_s"] = (configmaps + pods) / figures["initial_sync_s"]
            figures["rss_before_mb"] = rss_before
            figures["rss_n_mb"] = peak_rss_mb(pid)

            print("... event lag", file=sys.stderr, flush=True)
            lags = await measure_lag(
                member, engine, "bench", rate=args.rate, seconds=args.lag_seconds
            )
            figures["lag_p50_ms"] = statistics.median(lags) * 1000
            figures["lag_p99_ms"] = percentile(lags, 0.99) * 1000
            figures["lag_samples"] = len(lags)
            print("... CPU per watch event", file=sys.stderr, flush=True)
            with profiled(pid, args.profile and args.profile / "events.txt"):
                figures["event_cpu_us"], figures["db_event_cpu_us"] = await event_cpu(
                    member, engine, pid, rate=args.rate, seconds=args.lag_seconds
                )

            print("... second N objects", file=sys.stderr, flush=True)
            await seed(member, "bench-2", configmaps, pods)
            await wait_rows(engine, "bench", 2 * (configmaps + pods))
            figures["rss_2n_mb"] = peak_rss_mb(pid)
        finally:
            await engine.dispose()
            product.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of 20,000 ConfigMaps + 5,000 Pods"
    )
    parser.add_argument(
        "--rate", type=int, default=200, help="updates per second for the lag figure"
    )
    parser.add_argument("--lag-seconds", type=float, default=10.0)
    parser.add_argument(
        "--profile", type=Path, help="sample the product with py-spy into this directory"
    )
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args))
    if args.profile:
        for phase in ("sync.txt", "events.txt"):
            print("\n".join(profile_summary(args.profile / phase)), file=sys.stderr)
    if args.json:
        print(json.dumps({key: round(value, 3) for key, value in figures.items()}))
        return 0
    print(f"sync benchmark ({args.database}, {int(figures['objects'])} objects, ~2-4 KB)")
    rows = [
        ("floor_list_s", "paginated raw list, as kubectl get --raw (s)", "{:.1f}"),
        ("floor_parsed_s", "the same list decoded into Python objects (s)", "{:.1f}"),
        ("initial_sync_s", "apply PediaCluster -> last row stored (s)", "{:.1f}"),
        ("sync_ratio", "sync / raw floor (target <= 2.5)", "{:.2f}"),
        ("sync_ratio_parsed", "sync / decoded floor", "{:.2f}"),
        ("objects_per_s", "objects stored per second", "{:,.0f}"),
        ("sync_cpu_us_per_object", "our CPU per object, initial sync (us)", "{:.0f}"),
        ("db_sync_cpu_us_per_object", "database CPU per object, initial sync (us)", "{:.0f}"),
        ("event_cpu_us", "our CPU per watch event (us)", "{:.0f}"),
        ("db_event_cpu_us", "database CPU per watch event (us)", "{:.0f}"),
        ("rss_n_mb", "peak RSS after N objects (MB)", "{:.0f}"),
        ("rss_2n_mb", "peak RSS after 2N objects (MB)", "{:.0f}"),
        ("lag_p50_ms", f"event lag p50 at {args.rate}/s (ms)", "{:.0f}"),
        ("lag_p99_ms", f"event lag p99 at {args.rate}/s (ms, target < 1000)", "{:.0f}"),
    ]
    print_figures(rows, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
