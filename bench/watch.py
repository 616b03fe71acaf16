"""Watch benchmark: member change -> watch event, and what watchers cost the server.

    python bench/watch.py                        # PostgreSQL, 200 changes/s, 1,000 idle watchers
    python bench/watch.py --database sqlite --seconds 2 --idle 50 --active 5 --json

It starts etcd, a member and a host kube-apiserver, runs ``clusterpedia run`` (operator and API
server in one process, as users run it) syncing the member's ConfigMaps, and measures:

- idle: ``--idle`` watchers on a namespace where nothing changes; the server's CPU (% of one
  core, from /proc utime+stime over ``--seconds``) and RSS (target: under 5% of one core for
  1,000 watchers);
- active: ``--active`` watchers on the namespace a client PATCHes ``--rate`` times per second;
  event latency p50/p99 from the member PATCH returning to the event arriving at a watcher
  (every event of the first 10 watchers is a sample; target p99 < 1 s), whether every watcher
  got every event, and the server's CPU and RSS.

Watchers talk to the server directly with the host's front-proxy identity, as the host's
aggregation layer would (each watcher its own TLS connection).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import resource
import ssl
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from clusterpedia.kube.access import access_from_kubeconfig
from clusterpedia.kube.client import KubeClient
from clusterpedia.storage.changelog import ChangeLog
from clusterpedia.storage.engine import create_engine
from clusterpedia.testing.benchmarks import (
    benchmark_parser,
    cpu_seconds,
    operator_host,
    percentile,
    print_figures,
    quiet_product,
    rss_mb,
    wait_operator_ready,
)
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.databases import fresh_database
from clusterpedia.testing.objects import pediacluster
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually_async

PREFIX = "/apis/clusterpedia.io/v1beta1/resources/api/v1/namespaces"
NAMES = [f"cm-{i:03d}" for i in range(100)]
SAMPLED = 10  # watchers whose events are parsed for latency


async def cpu_percent(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds * 100


class Watchers:
    """Many watch streams against one server, each on its own connection. Every stream's
    events are counted; only the first ``sampled`` streams are parsed for latency, so the
    benchmark client (one Python process, like the server) does not become the bottleneck."""

    def __init__(self, url: str, tls: TLSFiles):
        self.url = url
        self.tls = tls
        self.context = ssl.create_default_context(cafile=tls.ca)
        self.context.load_cert_chain(tls.cert, tls.key)
        self.headers = {"X-Remote-User": "bench", "X-Remote-Group": "system:masters"}
        self.tasks: list[asyncio.Task[None]] = []
        self.sessions: list[aiohttp.ClientSession] = []
        self.opened = 0
        self.events = 0
        self.errors = 0  # ERROR events: a watcher cut with 410

    async def open(
        self, count: int, namespace: str, *, sampled: int = 0, on_event: Any = None
    ) -> None:
        for index in range(count):
            # One connector per watcher: a separate connection, as separate clients have.
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.context, limit=1),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            )
            self.sessions.append(session)
            sample = on_event if index < sampled else None
            self.tasks.append(asyncio.create_task(self._watch(session, namespace, sample)))
        await eventually_async(lambda: self.opened >= count, timeout=120, what="watchers open")

    async def _watch(self, session: aiohttp.ClientSession, namespace: str, on_event: Any) -> None:
        path = f"{PREFIX}/{namespace}/configmaps?watch=true&timeoutSeconds=3600"
        async with session.get(self.url + path, headers=self.headers) as response:
            response.raise_for_status()
            self.opened += 1
            pending = b""
            async for chunk in response.content.iter_any():
                self.events += chunk.count(b"\n")
                self.errors += chunk.count(b'{"type":"ERROR"')
                if on_event is None:
                    continue
                now = time.perf_counter()
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    on_event(now, line)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for session in self.sessions:
            await session.close()
        self.tasks.clear()
        self.sessions.clear()
        self.opened = self.events = self.errors = 0


@dataclass(frozen=True)
class TLSFiles:
    """What a watcher needs to connect as the host's aggregation layer (picklable, so a
    child process can use it)."""

    ca: str
    cert: str
    key: str

    @classmethod
    def of(cls, product: ProductProcess, host: APIServer) -> TLSFiles:
        proxy = host.pki.front_proxy_client
        assert proxy is not None
        return cls(str(product.cert_dir / "ca.crt"), str(proxy.cert), str(proxy.key))


def follow_in_child(
    url: str, tls: TLSFiles, count: int, expected: int, opened: Any, timeout: float
) -> tuple[int, int, list[tuple[float, bytes]]]:
    """The active watchers, in their own process so that receiving 20,000 events a second
    does not delay the process sending the changes (``perf_counter`` is CLOCK_MONOTONIC,
    comparable across processes)."""

    async def follow() -> tuple[int, int, list[tuple[float, bytes]]]:
        received: list[tuple[float, bytes]] = []
        watchers = Watchers(url, tls)
        await watchers.open(
            count,
            "bench-w",
            sampled=min(count, SAMPLED),
            on_event=lambda at, line: received.append((at, line)),
        )
        opened.set()
        with contextlib.suppress(AssertionError):  # a shortfall is a figure, not a crash
            await eventually_async(lambda: watchers.events >= expected, timeout=timeout)
        events, errors = watchers.events, watchers.errors
        await watchers.close()
        return events, errors, received

    return asyncio.run(follow())


async def logged_changes(url: str, *, after: int | None) -> int:
    """The change log's head (``after`` None), or how many changes were logged after it."""
    engine = create_engine(url)
    try:
        log = ChangeLog(engine)
        head = (await log.marks()).head
        if after is None:
            return head
        return len(await log.read(after=after, upto=head, limit=10**7))
    finally:
        await engine.dispose()


async def seed(member: APIServer, namespace: str) -> None:
    async with KubeClient(access_from_kubeconfig(member.kubeconfig.read_bytes())) as kube:
        await kube.post("/api/v1/namespaces", {"metadata": {"name": namespace}})
        for name in NAMES:
            await kube.post(
                f"/api/v1/namespaces/{namespace}/configmaps",
                {"metadata": {"name": name}, "data": {"seq": "-1"}},
            )


async def churn(member: APIServer, namespace: str, rate: int, seconds: float) -> dict[int, float]:
    """PATCH ``rate`` ConfigMaps per second; return seq -> time the PATCH returned."""
    sent: dict[int, float] = {}
    async with KubeClient(access_from_kubeconfig(member.kubeconfig.read_bytes())) as kube:
        started = time.perf_counter()
        for seq in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, started + seq / rate - time.perf_counter()))
            path = f"/api/v1/namespaces/{namespace}/configmaps/{NAMES[seq % len(NAMES)]}"
            await kube.patch(path, {"data": {"seq": str(seq)}})
            sent[seq] = time.perf_counter()
    return sent


async def run(args: argparse.Namespace) -> dict[str, float]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it too
    figures: dict[str, float] = {"idle_watchers": args.idle, "active_watchers": args.active}
    with ControlPlane() as plane, fresh_database(args.database, label="watchbench") as url:
        member = plane.add_apiserver("bench-member")
        host = operator_host(plane, front_proxy=True)
        await seed(member, "bench-w")
        product = quiet_product(host, url, "watch")
        assert product.process.pid is not None
        pid = product.process.pid
        tls = TLSFiles.of(product, host)
        watchers = Watchers(product.url, tls)
        try:
            wait_operator_ready(host)
            spec = pediacluster(
                "bench", member.kubeconfig.read_bytes(), {"group": "", "resources": ["configmaps"]}
            )
            host.kubectl("apply", "-f", "-", input=json.dumps(spec))
            listing = f"{PREFIX}/bench-w/configmaps"

            async def synced() -> bool:
                try:
                    body = await asyncio.to_thread(product.get_as_front_proxy, host, listing)
                except OSError:  # 404 until the type is synced
                    return False
                return len(orjson.loads(body)["items"]) == len(NAMES)

            await eventually_async(synced, timeout=120, what="the member's ConfigMaps synced")
            await asyncio.sleep(2)  # let the sync settle before measuring a quiet server

            figures["baseline_cpu_pct"] = await cpu_percent(pid, args.seconds)
            figures["baseline_rss_mb"] = rss_mb(pid)
            print(f"... {args.idle} idle watchers", file=sys.stderr, flush=True)
            await watchers.open(args.idle, "idle")
            await asyncio.sleep(1)
            figures["idle_cpu_pct"] = await cpu_percent(pid, args.seconds)
            figures["idle_rss_mb"] = rss_mb(pid)
            await watchers.close()

            print(f"... {args.active} active watchers, {args.rate}/s", file=sys.stderr, flush=True)
            expected = int(args.rate * args.seconds) * args.active
            head_before = await logged_changes(url, after=None)
            context = multiprocessing.get_context("spawn")
            with context.Manager() as manager, ProcessPoolExecutor(1, mp_context=context) as pool:
                opened = manager.Event()
                following = asyncio.get_running_loop().run_in_executor(
                    pool, follow_in_child, product.url, tls, args.active, expected, opened,
                    args.seconds + 60,
                )  # fmt: skip
                if not await asyncio.to_thread(opened.wait, 120):
                    raise TimeoutError("the active watchers did not open")
                cpu_before = cpu_seconds(pid)
                started = time.perf_counter()
                sent = await churn(member, "bench-w", args.rate, args.seconds)
                events, errors, received = await following
            elapsed = time.perf_counter() - started
            figures["logged_changes"] = await logged_changes(url, after=head_before)
            figures["active_cpu_pct"] = (cpu_seconds(pid) - cpu_before) / elapsed * 100
            figures["active_rss_mb"] = rss_mb(pid)
            figures["events"] = events
            figures["delivered_ratio"] = events / expected
            figures["expired_watchers"] = errors
            lags = []
            for at, line in received:
                seq = int(orjson.loads(line)["object"]["data"]["seq"])
                if seq in sent:
                    lags.append(max(0.0, at - sent[seq]))
            figures["latency_p50_ms"] = statistics.median(lags) * 1000
            figures["latency_p99_ms"] = percentile(lags, 0.99) * 1000
            await watchers.close()
        finally:
            await watchers.close()
            host.kubectl("delete", "pediacluster", "bench", "--timeout=60s", check=False)
            product.stop()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rate", type=int, default=200, help="member changes per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--idle", type=int, default=1000, help="idle watchers")
    parser.add_argument("--active", type=int, default=100, help="watchers receiving events")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args))
    if args.json:
        print(json.dumps({key: round(value, 3) for key, value in figures.items()}))
        return 0
    print(f"watch benchmark ({args.database}, {args.rate} changes/s, {args.seconds:.0f} s phases)")
    rows = [
        ("baseline_cpu_pct", "server CPU, synced and no watchers (% of one core)", "{:.1f}"),
        ("idle_cpu_pct", f"server CPU, {args.idle} idle watchers (%, target < 5)", "{:.1f}"),
        ("baseline_rss_mb", "server RSS, synced and no watchers (MB)", "{:.0f}"),
        ("idle_rss_mb", f"server RSS, {args.idle} idle watchers (MB)", "{:.0f}"),
        ("active_cpu_pct", f"server CPU, {args.active} active watchers (%)", "{:.1f}"),
        ("active_rss_mb", f"server RSS, {args.active} active watchers (MB)", "{:.0f}"),
        ("events", "events received (all watchers)", "{:,.0f}"),
        (
            "logged_changes",
            "changes logged (member changes merged within a batch: fewer)",
            "{:,.0f}",
        ),
        ("delivered_ratio", "events received / changes x watchers", "{:.3f}"),
        ("expired_watchers", "watchers cut with 410 (fell behind)", "{:.0f}"),
        ("latency_p50_ms", "member change -> watch event p50 (ms)", "{:.0f}"),
        ("latency_p99_ms", "member change -> watch event p99 (ms, target < 1000)", "{:.0f}"),
    ]
    print_figures(rows, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
