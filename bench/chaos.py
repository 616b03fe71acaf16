"""Load and chaos: many clients paging while two members churn, then faults on every side.

    python bench/chaos.py                  # PostgreSQL: 100,000 objects, 16 clients, 5 min load
    python bench/chaos.py --database mysql --objects 4000 --load-seconds 20 --fault-seconds 4 --json

It starts etcd, two members and a host kube-apiserver, and ``clusterpedia run`` (operator and
API server in one process, as users run it) syncing both members' ConfigMaps: ``--objects`` in
all, half in each member. Member one is reached through a fault-injecting HTTP proxy, the
database through a TCP proxy (``clusterpedia/testing/faults.py``). Then:

1. **load**: ``--clients`` clients page through every object (``limit=500``), over and over,
   while each member churns at ``--rate`` changes a second, for ``--load-seconds``. Reported:
   page latency p50/p99, objects served per second, errors (must be 0), and the server's RSS
   after a warm-up of a fifth of the run, at the end, and its slope over the rest.
2. **chaos**: with the churn and the clients still going, one fault after another, each for
   ``--fault-seconds`` with as long to recover: member one answers 5xx; member one cuts its
   JSON in half; member one trickles its answers; the database goes away (PostgreSQL and
   MySQL); ``kill -9`` of the process, restarted 2 s later.
3. **compare**: the churn stops; once the product has caught up, every object of both members
   is compared with the stored row (member resourceVersion): a missing or stale row is a
   loss, a row the member does not have is an extra. Both must be 0, and the change log must
   have no gap.

Client errors during the chaos phase are counted, not failures: while the database is down the
answer is a 503, and while the process restarts, connections are refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import ssl
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import aiohttp
import orjson
from sqlalchemy.engine import make_url

from clusterpedia.testing.benchmarks import (
    benchmark_parser,
    operator_host,
    percentile,
    print_figures,
    quiet_product,
    rss_mb,
    wait_operator_ready,
)
from clusterpedia.testing.consistency import (
    ConfigMapChurn,
    change_log_report,
    member_state,
    seed_configmaps,
    stored_state,
)
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.databases import fresh_database
from clusterpedia.testing.faults import ERROR, SLOW, TRUNCATE, MemberProxy, TcpProxy
from clusterpedia.testing.objects import configmaps_of, pediacluster
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually_async

NAMESPACE = "chaos"
LISTING = "/apis/clusterpedia.io/v1beta1/resources/api/v1/configmaps?limit=500"


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute."""
    if len(samples) < 2:
        return 0.0
    xs, ys = [x for x, _ in samples], [y for _, y in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in samples) / spread if spread else 0.0


def page_in_child(
    url: str, cert: tuple[str, str], clients: int, stop: Any, started: Any
) -> dict[str, Any]:
    """``clients`` clients paging through every object until ``stop`` is set, in a process of
    their own so that parsing their pages does not slow the process churning the members."""

    async def page() -> dict[str, Any]:
        # The server's CA changes when it restarts (a generated certificate), so the clients
        # do not check it; they present the host's front-proxy certificate, as the host would.
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.load_cert_chain(*cert)
        headers = {"X-Remote-User": "chaos", "X-Remote-Group": "system:masters"}
        latencies: list[float] = []
        errors: dict[str, int] = {}
        served = {"objects": 0, "passes": 0}

        async def client(session: aiohttp.ClientSession) -> None:
            token = ""
            while not stop.is_set():
                path = LISTING + (f"&continue={token}" if token else "")
                began = time.perf_counter()
                try:
                    async with session.get(url + path, headers=headers) as response:
                        body = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}")
                    page = orjson.loads(body)
                except Exception as error:  # counted by kind; the client starts over
                    kind = str(error) if isinstance(error, RuntimeError) else type(error).__name__
                    errors[kind] = errors.get(kind, 0) + 1
                    token = ""
                    await asyncio.sleep(0.2)
                    continue
                latencies.append(time.perf_counter() - began)
                served["objects"] += len(page["items"])
                token = page["metadata"].get("continue", "")
                served["passes"] += not token

        sessions = [
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context, limit=1),
                timeout=aiohttp.ClientTimeout(total=60),
            )
            for _ in range(clients)
        ]
        started.set()
        began = time.perf_counter()
        await asyncio.gather(*(client(session) for session in sessions))
        seconds = time.perf_counter() - began
        for session in sessions:
            await session.close()
        return {"latencies": latencies, "errors": errors, "seconds": seconds, **served}

    return asyncio.run(page())


class Clients:
    """The paging clients in a child process, from ``start`` until ``stop``."""

    def __init__(self, product: ProductProcess, host: APIServer, count: int):
        proxy = host.pki.front_proxy_client
        assert proxy is not None
        self.args = (product.url, (str(proxy.cert), str(proxy.key)), count)
        self.context = multiprocessing.get_context("spawn")
        self.manager = self.context.Manager()
        self.pool = ProcessPoolExecutor(1, mp_context=self.context)
        self.stop_event = self.manager.Event()
        self.result: asyncio.Future[dict[str, Any]] | None = None

    async def start(self) -> None:
        started = self.manager.Event()
        self.result = asyncio.get_running_loop().run_in_executor(
            self.pool, page_in_child, *self.args, self.stop_event, started
        )
        if not await asyncio.to_thread(started.wait, 120):
            raise TimeoutError("the paging clients did not start")

    async def stop(self) -> dict[str, Any]:
        assert self.result is not None
        self.stop_event.set()
        result = await self.result
        self.pool.shutdown()
        self.manager.shutdown()
        return result


async def converged(url: str, members: dict[str, APIServer]) -> bool:
    for cluster, member in members.items():
        stored, _ = await stored_state(url, cluster, NAMESPACE)
        if stored != await asyncio.to_thread(member_state, member, NAMESPACE):
            return False
    return True


async def compare(url: str, members: dict[str, APIServer]) -> dict[str, float]:
    """Every member object against its stored row, and the change log for gaps."""
    figures = {"objects_compared": 0.0, "losses": 0.0, "extras": 0.0}
    for cluster, member in members.items():
        expected = await asyncio.to_thread(member_state, member, NAMESPACE)
        stored, rows = await stored_state(url, cluster, NAMESPACE)
        figures["objects_compared"] += len(expected)
        figures["losses"] += sum(stored.get(name) != rv for name, rv in expected.items())
        figures["extras"] += len(stored.keys() - expected.keys()) + rows - len(stored)
    rvs, head, pruned, _ = await change_log_report(url, "one")
    figures["log_head"] = head
    figures["log_gaps"] = (head - pruned) - len(rvs)
    return figures


async def inject(
    name: str, start: Callable[[], None], end: Callable[[], None], seconds: float
) -> None:
    print(f"... fault: {name} for {seconds:.0f} s", file=sys.stderr, flush=True)
    start()
    try:
        await asyncio.sleep(seconds)
    finally:
        end()
    await asyncio.sleep(seconds)  # as long again to recover before the next one


async def run(args: argparse.Namespace) -> dict[str, float]:
    figures: dict[str, float] = {"clients": args.clients, "objects": args.objects}
    with ControlPlane() as plane, fresh_database(args.database, label="chaos") as url:
        one, two = plane.add_apiserver("chaos-one"), plane.add_apiserver("chaos-two")
        members = {"one": one, "two": two}
        host = operator_host(plane, front_proxy=True)
        print(f"... seeding {args.objects:,} ConfigMaps", file=sys.stderr, flush=True)
        await asyncio.gather(
            *(seed_configmaps(m, NAMESPACE, args.objects // 2) for m in members.values())
        )
        storage_url, database_proxy = url, None
        if args.database != "sqlite":
            real = make_url(url)
            assert real.host is not None and real.port is not None
            database_proxy = TcpProxy(real.host, real.port).start()
            storage_url = real.set(port=database_proxy.port).render_as_string(hide_password=False)
        member_proxy = MemberProxy(one.url, one.ssl_context()).start()
        product = quiet_product(host, storage_url, "chaos")
        clients = None
        try:
            wait_operator_ready(host)
            kubeconfigs = {"one": member_proxy.kubeconfig(), "two": two.kubeconfig.read_bytes()}
            began = time.monotonic()
            for cluster, kubeconfig in kubeconfigs.items():
                spec = pediacluster(cluster, kubeconfig, configmaps_of(NAMESPACE))
                host.kubectl("apply", "-f", "-", input=json.dumps(spec))
            await eventually_async(
                lambda: converged(url, members), timeout=1800, interval=2, what="initial sync"
            )
            figures["initial_sync_s"] = time.monotonic() - began

            print(f"... load for {args.load_seconds:.0f} s", file=sys.stderr, flush=True)
            pid = product.process.pid
            assert pid is not None
            churn = ConfigMapChurn(
                [one, two], NAMESPACE, names=args.objects // 2, rate=2 * args.rate
            )
            clients = Clients(product, host, args.clients)
            await clients.start()
            rss: list[tuple[float, float]] = []
            with churn:
                load_began = time.monotonic()
                while (elapsed := time.monotonic() - load_began) < args.load_seconds:
                    rss.append((elapsed, rss_mb(pid)))
                    await asyncio.sleep(1)
                load = await clients.stop()
                figures["load_changes"] = churn.changes
                figures["load_changes_per_s"] = churn.changes / (time.monotonic() - load_began)
                clients = None
                warm = [(t, mb) for t, mb in rss if t >= args.load_seconds / 5]
                figures["rss_after_warmup_mb"] = warm[0][1]
                figures["rss_end_mb"] = warm[-1][1]
                figures["rss_max_mb"] = max(mb for _, mb in warm)
                figures["rss_slope_mb_per_min"] = slope_per_minute(warm)
                figures["load_pages"] = len(load["latencies"])
                figures["load_passes"] = load["passes"]
                figures["load_objects_per_s"] = load["objects"] / load["seconds"]
                figures["page_p50_ms"] = statistics.median(load["latencies"]) * 1000
                figures["page_p99_ms"] = percentile(load["latencies"], 0.99) * 1000
                figures["load_errors"] = sum(load["errors"].values())
                if load["errors"]:
                    print(f"load errors: {load['errors']}", file=sys.stderr)

                print("... chaos", file=sys.stderr, flush=True)
                clients = Clients(product, host, args.clients)
                await clients.start()
                faults = 0
                for fault in (ERROR, TRUNCATE, SLOW):

                    def start(fault: str = fault) -> None:
                        member_proxy.fault = fault

                    def end() -> None:
                        member_proxy.fault = None

                    await inject(f"member {fault}", start, end, args.fault_seconds)
                    faults += 1
                if database_proxy is not None:
                    await inject(
                        "database outage",
                        database_proxy.cut,
                        database_proxy.restore,
                        args.fault_seconds,
                    )
                    faults += 1
                print("... fault: kill -9, restart after 2 s", file=sys.stderr, flush=True)
                product.kill()
                await asyncio.sleep(2)
                await asyncio.to_thread(product.start)
                faults += 1
                await asyncio.sleep(args.fault_seconds)
                chaos = await clients.stop()
                clients = None
                figures["faults"] = faults
                figures["chaos_pages"] = len(chaos["latencies"])
                figures["chaos_client_errors"] = sum(chaos["errors"].values())
            figures["changes"] = churn.changes

            print("... comparing", file=sys.stderr, flush=True)
            settle = time.monotonic()
            with contextlib.suppress(AssertionError):  # a difference is a figure, not a crash
                await eventually_async(
                    lambda: converged(url, members), timeout=300, interval=2, what="caught up"
                )
            figures["catch_up_s"] = time.monotonic() - settle
            figures.update(await compare(url, members))
        finally:
            # No PediaCluster is deleted: the host and the database are thrown away anyway,
            # and removing 100,000 rows would only add minutes.
            if clients is not None:
                with contextlib.suppress(Exception):
                    await clients.stop()
            product.stop()
            member_proxy.close()
            if database_proxy is not None:
                database_proxy.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--objects", type=int, default=100_000, help="ConfigMaps in all")
    parser.add_argument("--clients", type=int, default=16, help="clients paging at once")
    parser.add_argument("--rate", type=int, default=200, help="changes per second per member")
    parser.add_argument("--load-seconds", type=float, default=300.0, help="length of the load")
    parser.add_argument(
        "--fault-seconds", type=float, default=15.0, help="length of each fault (and recovery)"
    )
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args))
    clean = figures["losses"] == figures["extras"] == figures["log_gaps"] == 0
    clean = clean and figures["load_errors"] == 0
    if args.json:
        print(json.dumps({key: round(value, 3) for key, value in figures.items()}))
        return 0 if clean else 1
    print(
        f"chaos benchmark ({args.database}, {args.objects:,} objects, {args.clients} clients, "
        f"{args.rate} changes/s per member, {args.load_seconds:.0f} s load)"
    )
    rows = [
        ("initial_sync_s", "initial sync of both members (s)", "{:.1f}"),
        ("load_changes_per_s", "member changes per second during the load (both)", "{:.0f}"),
        ("load_pages", "pages served during the load", "{:,.0f}"),
        ("load_passes", "full passes through every object", "{:,.0f}"),
        ("load_objects_per_s", "objects served per second", "{:,.0f}"),
        ("page_p50_ms", "page of 500 p50 (ms)", "{:.0f}"),
        ("page_p99_ms", "page of 500 p99 (ms)", "{:.0f}"),
        ("load_errors", "client errors during the load (must be 0)", "{:.0f}"),
        ("rss_after_warmup_mb", "server RSS after warm-up (MB)", "{:.0f}"),
        ("rss_end_mb", "server RSS at the end of the load (MB)", "{:.0f}"),
        ("rss_max_mb", "server RSS, highest after warm-up (MB)", "{:.0f}"),
        ("rss_slope_mb_per_min", "server RSS slope after warm-up (MB/min)", "{:.2f}"),
        ("faults", "faults injected", "{:.0f}"),
        ("chaos_client_errors", "client errors during the faults (expected)", "{:.0f}"),
        ("changes", "member changes in all", "{:,.0f}"),
        ("catch_up_s", "caught up after the churn stopped (s)", "{:.1f}"),
        ("objects_compared", "objects compared with the members", "{:,.0f}"),
        ("losses", "objects lost or stale (must be 0)", "{:.0f}"),
        ("extras", "stored objects the members do not have (must be 0)", "{:.0f}"),
        ("log_gaps", "gaps in the change log (must be 0)", "{:.0f}"),
    ]
    print_figures(rows, figures)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
