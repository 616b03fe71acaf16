"""API server benchmark: latency and throughput of list, get and search over HTTPS.

    python bench/api.py                           # 100,000 pods in 5 clusters, PostgreSQL, a table
    python bench/api.py --pods 5000 --database sqlite --json

The server runs as users run it, ``clusterpedia run --no-operator`` in its own process, behind
TLS, authenticating every request as the host's front proxy would (client certificate plus
``X-Remote-*`` headers, group ``system:masters`` so no SubjectAccessReview is involved: this
measures our path, not the host's). The client is aiohttp in this process.

Figures, at concurrency 1 and 16:

- ``page``: ``GET .../resources/api/v1/pods?limit=500`` (all clusters, first page);
- ``deep_page``: the page at item 50,000 via its continue token;
- ``get``: one pod by cluster, namespace and name;
- ``label``: ``labelSelector=app=app-42`` across all clusters (100 pods at 100k);
- ``full_list_mb_per_s``: every page of 500 in sequence, response bytes per second;
- ``server_rss_*_mb``: the server's resident memory before the load, right after it,
  ``--settle-seconds`` later (freed heap goes back every 30 s), and its peak.

Targets (issue 5): p50 of a 500-item page under 50 ms; full list at least 50 MB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from clusterpedia.storage.catalog import SyncedType, TypeCatalog
from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.migrate import ensure_schema
from clusterpedia.storage.records import upsert_from_object
from clusterpedia.storage.writer import ResourceWriter
from clusterpedia.testing.assets import find_assets
from clusterpedia.testing.benchmarks import Client, continue_of, measure, peak_rss_mb, rss_mb
from clusterpedia.testing.controlplane import ControlPlane
from clusterpedia.testing.databases import fresh_database
from clusterpedia.testing.objects import PODS, realistic_pod
from clusterpedia.testing.product import ProductProcess

PREFIX = "/apis/clusterpedia.io/v1beta1/resources"
CLUSTERS = ("c1", "c2", "c3", "c4", "c5")
BATCH = 1000


async def seed(url: str, pods: int) -> None:
    engine = create_engine(url)
    try:
        await ensure_schema(engine)
        writer, catalog = ResourceWriter(engine), TypeCatalog(engine)
        per_cluster = pods // len(CLUSTERS)
        for cluster in CLUSTERS:
            await catalog.replace(
                cluster, [SyncedType(cluster, "", "v1", "pods", "Pod", True, "pod", ("po",))]
            )
            for start in range(0, per_cluster, BATCH):
                changes = [
                    upsert_from_object(realistic_pod(i, cluster=cluster), is_new=True)
                    for i in range(start, min(start + BATCH, per_cluster))
                ]
                await writer.apply(cluster=cluster, rtype=PODS, changes=changes)
    finally:
        await engine.dispose()


async def full_list(client: Client, *, deep_at: int) -> tuple[float, float, str]:
    """Walk every page of 500: MB/s, items/s, and the continue token at item ``deep_at``."""
    token, total_bytes, items, deep_token = "", 0, 0, ""
    started = time.perf_counter()
    while True:
        body = await client.get(f"{PREFIX}/api/v1/pods?limit=500&continue={token}")
        total_bytes += len(body)
        token = continue_of(body)
        items += 500 if token else body.count(b'"kind":"Pod"')
        if items == deep_at:
            deep_token = token
        if not token:
            break
    elapsed = time.perf_counter() - started
    return total_bytes / elapsed / 1e6, items / elapsed, deep_token


async def run_benchmark(
    base: str, context: ssl.SSLContext, *, pods: int, requests: int
) -> dict[str, float]:
    client = Client(base, context)
    figures: dict[str, float] = {}
    try:
        await client.get(f"{PREFIX}/api/v1/pods?limit=1")
        deep_at = (pods // 2) // 500 * 500
        await full_list(client, deep_at=deep_at)  # the first walk warms the database's cache
        walks = [await full_list(client, deep_at=deep_at) for _ in range(3)]
        mb_per_s, items_per_s, deep_token = sorted(walks)[1]  # the median walk
        figures["full_list_mb_per_s"] = mb_per_s
        figures["full_list_items_per_s"] = items_per_s
        pod = realistic_pod(7, cluster="c3")
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        operations: dict[str, Callable[[], Awaitable[Any]]] = {
            "page": lambda: client.get(f"{PREFIX}/api/v1/pods?limit=500"),
            "deep_page": lambda: client.get(
                f"{PREFIX}/api/v1/pods?limit=500&continue={deep_token}"
            ),
            "get": lambda: client.get(
                f"{PREFIX}/clusters/c3/api/v1/namespaces/{namespace}/pods/{name}"
            ),
            "label": lambda: client.get(
                f"{PREFIX}/api/v1/pods?limit=500&labelSelector=app%3Dapp-42"
            ),
        }
        for label, operation in operations.items():
            for concurrency in (1, 16):
                result = await measure(operation, concurrency=concurrency, requests=requests)
                for key, value in result.items():
                    figures[f"{label}_c{concurrency}_{key}"] = value
    finally:
        await client.session.close()
    return figures


def print_table(figures: dict[str, float], *, pods: int, database: str) -> None:
    print(f"API server, {pods:,} pods in {len(CLUSTERS)} clusters, {database}")
    print(f"{'request':<12}{'conc':>6}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}")
    for label in ("page", "deep_page", "get", "label"):
        for concurrency in (1, 16):
            prefix = f"{label}_c{concurrency}_"
            print(
                f"{label:<12}{concurrency:>6}{figures[prefix + 'p50_ms']:>10.1f}"
                f"{figures[prefix + 'p99_ms']:>10.1f}{figures[prefix + 'rps']:>10.0f}"
            )
    print(
        f"full paginated list: {figures['full_list_mb_per_s']:.1f} MB/s, "
        f"{figures['full_list_items_per_s']:,.0f} items/s"
    )
    print(
        f"server RSS: {figures['server_rss_idle_mb']:.0f} MB idle, "
        f"{figures['server_rss_after_mb']:.0f} MB after the load, "
        f"{figures['server_rss_settled_mb']:.0f} MB a while later, "
        f"{figures['server_rss_peak_mb']:.0f} MB at its peak"
    )
    print("targets: page p50 < 50 ms; full list >= 50 MB/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument(
        "--database", default="postgresql", choices=("postgresql", "mysql", "sqlite")
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per figure")
    parser.add_argument(
        "--settle-seconds", type=float, default=35, help="idle time before the settled RSS"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object of figures")
    args = parser.parse_args(argv)
    assets = find_assets()
    if assets is None:
        print(
            "bench/api.py needs the test binaries: python -m clusterpedia.testing.assets",
            file=sys.stderr,
        )
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="bench-api-") as workdir,
        ControlPlane(assets=assets, workdir=Path(workdir) / "plane") as plane,
        fresh_database(args.database, label="bench_api") as url,
    ):
        host = plane.add_apiserver("host", front_proxy=True)
        asyncio.run(seed(url, args.pods))
        server = ProductProcess(
            workdir=Path(workdir) / "server",
            kubeconfig=host.kubeconfig,
            storage_url=url,
            extra_args=("--no-operator", "--log-level=WARNING"),
        ).start()
        try:
            assert server.process.pid is not None
            context = server.front_proxy_context(host)
            rss_idle = rss_mb(server.process.pid)
            figures = asyncio.run(
                run_benchmark(server.url, context, pods=args.pods, requests=args.requests)
            )
            figures["server_rss_idle_mb"] = rss_idle
            figures["server_rss_after_mb"] = rss_mb(server.process.pid)
            figures["server_rss_peak_mb"] = peak_rss_mb(server.process.pid)
            time.sleep(args.settle_seconds)  # the server hands freed heap back every 30 s
            figures["server_rss_settled_mb"] = rss_mb(server.process.pid)
        finally:
            server.stop()
        # Reported before the database is dropped, so a slow clean-up cannot lose them.
        if args.json:
            print(json.dumps({key: round(value, 3) for key, value in figures.items()}))
        else:
            print_table(figures, pods=args.pods, database=args.database)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
