"""Storage benchmark: write rate against the raw driver's bulk path, and read latencies.

    python bench/storage.py                      # all three databases, 100,000 pods, a table
    python bench/storage.py --rows 20000 --databases sqlite --json

For each database it measures, on realistic ~3 KB Pod JSON:

- write rate of ``ResourceWriter.apply`` (batches of 500, one transaction each) beside the
  floor: the driver's fastest bulk insert into the same table with the same batches and
  commits (PostgreSQL ``COPY``, MySQL multi-row ``INSERT``, SQLite ``executemany``);
  ``write_ratio`` = ours/floor;
- re-sync rate: the same batches again, unchanged resourceVersions (skipped rows);
- list latency, limit 500: the first page, the page at row 90,000 reached by our continue token
  (keyset), and the same page by the original's integer offset;
- owner-uid search (one cluster) and label-selector search latency;
- the full paginated scan rate (MB/s of object bytes).

PostgreSQL and MariaDB come from the same servers the tests use (``hack/test`` starts them;
``CLUSTERPEDIA_TEST_POSTGRES_URL`` / ``CLUSTERPEDIA_TEST_MYSQL_URL`` point elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import psycopg
import pymysql
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from clusterpedia.search.params import query_from_request
from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.migrate import ensure_schema
from clusterpedia.storage.query import TypeFilter
from clusterpedia.storage.reader import ResourceReader
from clusterpedia.storage.records import Upsert, upsert_from_object
from clusterpedia.storage.schema import resources
from clusterpedia.storage.writer import ResourceWriter
from clusterpedia.testing.databases import DIALECTS, fresh_database
from clusterpedia.testing.objects import PODS, realistic_pod

POD_TYPE = (TypeFilter("", "v1", "pods"),)
CLUSTERS = ("c1", "c2", "c3", "c4")
BATCH = 500
PAGE = 500
REPEAT = 15
COLUMNS = (
    "group", "version", "resource", "kind", "cluster", "namespace", "name", "uid", "owner_uid",
    "resource_version", "created_at", "synced_at", "deleted_at", "labels", "object",
)  # fmt: skip


def make_rows(rows: int) -> dict[str, list[Upsert]]:
    per_cluster = rows // len(CLUSTERS)
    return {
        # is_new: the first sync of a cluster into an empty table, as the sync worker marks it
        cluster: [
            upsert_from_object(realistic_pod(i, cluster=cluster), is_new=True)
            for i in range(per_cluster)
        ]
        for cluster in CLUSTERS
    }


async def p50_ms(operation: Callable[[], Awaitable[Any]], repeat: int = REPEAT) -> float:
    await operation()  # warm caches and connections
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        await operation()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def floor_insert(url: str, data: dict[str, list[Upsert]]) -> float:
    """Insert every row with the driver's fastest bulk path; return rows/s."""
    target = make_url(url)
    dialect = target.get_backend_name()
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    rows = [
        (
            "", "v1", "pods", "Pod", cluster, u.namespace, u.name, u.uid, u.owner_uid,
            u.resource_version, u.created_at, now, u.deleted_at,
            u.labels.decode() if u.labels else None,
            u.object if dialect == "postgresql" else u.object.decode(),
        )
        for cluster, upserts in data.items()
        for u in upserts
    ]  # fmt: skip
    columns = ", ".join(f'"{c}"' if dialect != "mysql" else f"`{c}`" for c in COLUMNS)
    batches = [rows[start : start + BATCH] for start in range(0, len(rows), BATCH)]
    started = time.perf_counter()
    if dialect == "postgresql":
        with psycopg.connect(
            host=target.host, port=target.port, user=target.username,
            password=target.password, dbname=target.database,
        ) as connection:  # fmt: skip
            for batch in batches:
                with (
                    connection.cursor() as cursor,
                    cursor.copy(f"COPY resources ({columns}) FROM STDIN") as copy,
                ):
                    for row in batch:
                        copy.write_row(row)
                connection.commit()
    elif dialect == "mysql":
        connection = pymysql.connect(
            host=target.host, port=target.port or 3306, user=target.username,
            password=target.password or "", database=target.database, charset="utf8mb4",
        )  # fmt: skip
        try:
            placeholders = ", ".join(["%s"] * len(COLUMNS))
            statement = f"INSERT INTO resources ({columns}) VALUES ({placeholders})"
            with connection.cursor() as cursor:
                for batch in batches:
                    cursor.executemany(statement, batch)  # pymysql folds it into one INSERT
                    connection.commit()
        finally:
            connection.close()
    else:
        connection = sqlite3.connect(str(target.database))
        try:
            # The storage engine's own pragmas, so only the write path differs.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA cache_size=-65536")
            placeholders = ", ".join(["?"] * len(COLUMNS))
            statement = f"INSERT INTO resources ({columns}) VALUES ({placeholders})"
            for batch in batches:
                with connection:
                    connection.executemany(statement, batch)
        finally:
            connection.close()
    return len(rows) / (time.perf_counter() - started)


async def write_rate(writer: ResourceWriter, data: dict[str, list[Upsert]]) -> float:
    total = sum(len(v) for v in data.values())
    started = time.perf_counter()
    for cluster, upserts in data.items():
        for start in range(0, len(upserts), BATCH):
            await writer.apply(cluster=cluster, rtype=PODS, changes=upserts[start : start + BATCH])
    return total / (time.perf_counter() - started)


async def truncate(writer: ResourceWriter) -> None:
    async with writer.engine.begin() as connection:
        await connection.execute(sa.delete(resources))


async def bench_database(
    dialect: str, rows: int, data: dict[str, list[Upsert]]
) -> dict[str, float]:
    figures: dict[str, float] = {}
    with fresh_database(dialect, label="bench") as url:
        engine = create_engine(url, pool_size=4) if dialect != "sqlite" else create_engine(url)
        try:
            await ensure_schema(engine)
            writer, reader = ResourceWriter(engine), ResourceReader(engine)
            figures["floor_rows_per_s"] = await asyncio.to_thread(floor_insert, url, data)
            await truncate(writer)
            figures["write_rows_per_s"] = await write_rate(writer, data)
            figures["write_ratio"] = figures["write_rows_per_s"] / figures["floor_rows_per_s"]
            unchanged = {c: [replace(u, is_new=False) for u in us] for c, us in data.items()}
            figures["resync_rows_per_s"] = await write_rate(writer, unchanged)
            if dialect == "postgresql":
                async with engine.begin() as connection:
                    await connection.exec_driver_sql("ANALYZE resources")

            def page(**params: str) -> Callable[[], Awaitable[Any]]:
                query = query_from_request({k: [v] for k, v in params.items()}, types=POD_TYPE)
                return lambda: reader.list(query)

            figures["first_page_p50_ms"] = await p50_ms(page(limit=str(PAGE)))
            # Walk to row 90,000 (or 90% of a smaller table) with continue tokens, timing the scan.
            deep_row = min(90_000, int(rows * 0.9)) // PAGE * PAGE
            token, scanned_bytes, deep_token = None, 0, None
            started = time.perf_counter()
            position = 0
            while True:
                params = {"limit": [str(PAGE)], **({"continue": [token]} if token else {})}
                result = await reader.list(query_from_request(params, types=POD_TYPE))
                scanned_bytes += sum(len(item.data) for item in result.items)
                position += len(result.items)
                if position == deep_row:
                    deep_token = result.continue_token
                token = result.continue_token
                if token is None:
                    break
            figures["scan_mb_per_s"] = scanned_bytes / 1e6 / (time.perf_counter() - started)
            assert deep_token is not None
            figures["deep_page_p50_ms"] = await p50_ms(
                page(limit=str(PAGE), **{"continue": deep_token})
            )
            figures["deep_offset_page_p50_ms"] = await p50_ms(
                page(limit=str(PAGE), **{"continue": str(deep_row)})
            )
            figures["deep_to_first_ratio"] = (
                figures["deep_page_p50_ms"] / figures["first_page_p50_ms"]
            )
            figures["owner_uid_p50_ms"] = await p50_ms(page(clusters="c2", ownerUID="c2-rs-417"))
            figures["label_selector_p50_ms"] = await p50_ms(
                page(labelSelector="app=app-417,tier=front", limit=str(PAGE))
            )
        finally:
            await engine.dispose()
    return figures


ROWS_SHOWN = [
    ("floor_rows_per_s", "raw driver bulk insert (rows/s)", "{:,.0f}"),
    ("write_rows_per_s", "ResourceWriter.apply (rows/s)", "{:,.0f}"),
    ("write_ratio", "write ratio (target >= 0.70)", "{:.2f}"),
    ("resync_rows_per_s", "re-sync, unchanged rows (rows/s)", "{:,.0f}"),
    ("first_page_p50_ms", "first page of 500, p50 (ms)", "{:.1f}"),
    ("deep_page_p50_ms", "page at row 90,000 by continue token, p50 (ms)", "{:.1f}"),
    ("deep_to_first_ratio", "deep / first page (target <= 1.5)", "{:.2f}"),
    ("deep_offset_page_p50_ms", "same page by integer offset (original), p50 (ms)", "{:.1f}"),
    ("owner_uid_p50_ms", "owner uid search, p50 (ms)", "{:.1f}"),
    ("label_selector_p50_ms", "label selector search, p50 (ms)", "{:.1f}"),
    ("scan_mb_per_s", "full paginated scan (MB/s)", "{:.1f}"),
]


def print_table(results: dict[str, dict[str, float]], rows: int) -> None:
    dialects = list(results)
    width = max(len(label) for _, label, _ in ROWS_SHOWN)
    print(
        f"storage benchmark: {rows:,} pods (~3 KB) in {len(CLUSTERS)} clusters, batches of {BATCH}"
    )
    print(f"{'':{width}}  " + "  ".join(f"{d:>12}" for d in dialects))
    for key, label, fmt in ROWS_SHOWN:
        cells = [fmt.format(results[d][key]) if key in results[d] else "-" for d in dialects]
        print(f"{label:{width}}  " + "  ".join(f"{c:>12}" for c in cells))


async def main(argv: list[str] | None = None) -> int:
    global BATCH
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=BATCH, help="rows per write transaction")
    parser.add_argument(
        "--databases", default=",".join(DIALECTS), help="comma list of sqlite,postgresql,mysql"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )
    args = parser.parse_args(argv)
    dialects = [d for d in args.databases.split(",") if d]
    BATCH = args.batch
    if args.rows < 2 * PAGE * len(CLUSTERS):
        parser.error(f"--rows must be at least {2 * PAGE * len(CLUSTERS)}")
    data = make_rows(args.rows)
    results = {}
    for dialect in dialects:
        print(f"... {dialect}", file=sys.stderr, flush=True)
        results[dialect] = await bench_database(dialect, args.rows, data)
    if args.json:
        print(
            json.dumps(
                {
                    f"{d}_{k}": round(v, 3)
                    for d, figures in results.items()
                    for k, v in figures.items()
                }
            )
        )
    else:
        print_table(results, args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
