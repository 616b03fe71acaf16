"""Fleet benchmark: N real member kube-apiservers, M objects in all, one ``clusterpedia run``.

    python bench/fleet.py                                    # 20 members, 1,000,000 objects
    python bench/fleet.py --members 3 --objects 30000 --json

Every member is a real kube-apiserver (one etcd holds them all, as one etcd per member would
only cost memory here; ``--watch-cache=false``, or 20 members would not fit in memory) holding
M/N objects: 60% ConfigMaps (~0.7 KB), 30% Pods (~2.5 KB, as
a Deployment's), 10% objects of a custom resource (``gadgets.fleet.example.com``). They are
created through each member's API, by concurrent POSTs to every member at once; the seeding
time is printed. Then one ``clusterpedia run`` (operator, workers and API server in one
process, as users run it) syncs all N members into a fresh database, and the benchmark
reports:

- initial sync: wall time from applying the N PediaClusters to the last of M rows stored,
  objects per second; CPU seconds per 1,000 objects of ours, of the database and of the
  members (every member kube-apiserver and etcd);
- RSS of ``clusterpedia run`` when M/4, M/2 and M rows are stored (``VmRSS``; and the peak);
- database size on disk per object (everything: rows, indexes, change log);
- at M, through the API server as the host's aggregation layer calls it: a page of 500 Pods
  across all clusters (p50/p99, one client and 16), the page at half the Pods (continue
  token), a label search, a get by name;
- watch event lag p50/p99: one watcher of every cluster's ConfigMaps through our API, while
  ``--rate`` PATCHes a second go to the members in turn (member PATCH sent -> event read).

- event throughput: member changes stored per second while PATCHes go to every member at
  once (64 in flight) for ``--throughput-seconds``, and whose CPU it took.

With ``--replicas R`` (> 1), R ``clusterpedia run --sharding`` share the fleet (README,
"Sharding"): each replica's share of the objects and its CPU seconds for the initial sync,
then the failover time after ``kill -9`` of one replica: until a change made in each of its
members right after the kill is stored by another replica.

Targets (issue 14): RSS < 300 MB and flat in M; page p50 < 50 ms; watch lag p99 < 1 s.
Targets (issue 16): each replica's share within 20% of 1/R; failover <= 30 s.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable
from typing import Any

import aiohttp
import orjson
import sqlalchemy as sa

from clusterpedia.kube.access import access_from_kubeconfig
from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.schema import HEAD, change_log_marks, resources
from clusterpedia.testing.benchmarks import (
    DATABASE_PROCESSES,
    Client,
    benchmark_parser,
    continue_of,
    cpu_seconds,
    measure,
    operator_host,
    peak_rss_mb,
    percentile,
    print_figures,
    processes_cpu_seconds,
    quiet_product,
    rss_mb,
    wait_operator_ready,
)
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.databases import fresh_database
from clusterpedia.testing.objects import gadget_crd, pediacluster, realistic_pod
from clusterpedia.testing.product import ProductProcess

PREFIX = "/apis/clusterpedia.io/v1beta1/resources"
NAMESPACES = 10
SEED_CONCURRENCY = 8  # POSTs in flight per member
# Members answer lists and watches from etcd: with its watch cache each member kube-apiserver
# grew by about 50 KB per Pod, and 20 of them would not fit this machine's 23 GB at M.
MEMBER_ARGS = ("--watch-cache=false",)
CUSTOM_GROUP = "fleet.example.com"  # gadget_crd: spec.color and spec.size as columns


def configmap(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"cm-{index:06d}", "labels": {"app": f"app-{index % 100}"}},
        "data": {f"key-{n}": f"value-{index}-{n}-" + "x" * 120 for n in range(4)},
    }


def pod(index: int) -> dict[str, Any]:
    body = realistic_pod(index)
    body["metadata"] = {"name": f"pod-{index:06d}", "labels": body["metadata"]["labels"]}
    body.pop("status")
    return body


def gadget(index: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{CUSTOM_GROUP}/v1",
        "kind": "Gadget",
        "metadata": {"name": f"gadget-{index:06d}", "labels": {"tier": f"t{index % 7}"}},
        "spec": {"size": index % 13, "color": ["red", "green", "blue"][index % 3]},
    }


def planned(per_member: int, index: int) -> tuple[str, dict[str, Any]]:
    """(collection path, body) of a member's object ``index``: Pods first, then Gadgets, then
    ConfigMaps. Made when needed: a million bodies held at once would take gigabytes."""
    pods, gadgets = per_member * 3 // 10, per_member // 10
    namespace = f"fleet-{index % NAMESPACES}"
    if index < pods:
        return f"/api/v1/namespaces/{namespace}/pods", pod(index)
    if index < pods + gadgets:
        return f"/apis/{CUSTOM_GROUP}/v1/namespaces/{namespace}/gadgets", gadget(index)
    return f"/api/v1/namespaces/{namespace}/configmaps", configmap(index)


def first_configmap(per_member: int) -> int:
    """The index of a member's first ConfigMap (planned: Pods, then Gadgets, then these)."""
    return per_member * 3 // 10 + per_member // 10


def start_members(plane: ControlPlane, count: int) -> list[APIServer]:
    """Start ``count`` member API servers with the Gadget CRD and the namespaces. One after
    the other, from this thread: a child process dies with the thread that started it."""
    members = []
    for index in range(count):
        member = plane.add_apiserver(f"member-{index:02d}", extra_args=MEMBER_ARGS)
        member.kubectl("apply", "-f", "-", input=json.dumps(gadget_crd(CUSTOM_GROUP)))
        for namespace in range(NAMESPACES):
            member.kubectl("create", "namespace", f"fleet-{namespace}")
        members.append(member)
    for member in members:
        member.kubectl(
            "wait", "--for=condition=established", "--timeout=60s",
            f"crd/gadgets.{CUSTOM_GROUP}",
        )  # fmt: skip
    return members


async def seed(members: list[APIServer], per_member: int) -> None:
    """Every member's objects, by POSTs to all members at once."""

    async def fill(member: APIServer) -> None:
        indexes = iter(range(per_member))
        access = access_from_kubeconfig(member.kubeconfig.read_bytes())
        async with KubeClient(access) as kube:

            async def worker() -> None:
                for index in indexes:
                    await kube.post(*planned(per_member, index))

            await asyncio.gather(*(worker() for _ in range(SEED_CONCURRENCY)))

    await asyncio.gather(*(fill(member) for member in members))


async def log_head(engine: Any) -> int:
    async with engine.connect() as connection:
        query = sa.select(change_log_marks.c.rv).where(change_log_marks.c.name == HEAD)
        return int((await connection.execute(query)).scalar() or 0)


async def stored_per_cluster(engine: Any) -> dict[str, int]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            sa.select(resources.c.cluster, sa.func.count())
            .where(resources.c.namespace.like("fleet-%"))
            .group_by(resources.c.cluster)
        )
        return {cluster: int(count) for cluster, count in rows}


async def database_bytes(engine: Any) -> dict[str, float]:
    async with engine.connect() as connection:
        if engine.dialect.name != "postgresql":
            return {}
        total = await connection.exec_driver_sql("SELECT pg_database_size(current_database())")
        log = await connection.exec_driver_sql("SELECT pg_total_relation_size('change_log')")
        return {"database": float(total.scalar_one()), "change_log": float(log.scalar_one())}


def member_pids(plane: ControlPlane, members: list[APIServer]) -> list[int]:
    pids = [member.pid for member in members] + [plane.etcd.pid]
    return [pid for pid in pids if pid is not None]


def pids(products: list[ProductProcess]) -> list[int]:
    found = [product.process.pid for product in products]
    return [pid for pid in found if pid is not None]


async def initial_sync(
    *,
    engine: Any,
    host: APIServer,
    members: list[APIServer],
    products: list[ProductProcess],
    plane: ControlPlane,
    objects: int,
) -> dict[str, float]:
    """Apply every PediaCluster; wait for every row; CPU and memory along the way (RSS of
    the first replica; CPU of all, and of each)."""
    pid = pids(products)[0]
    figures: dict[str, float] = {"rss_before_mb": rss_mb(pid)}
    replica_cpu = [cpu_seconds(p) for p in pids(products)]
    ours, database = sum(replica_cpu), processes_cpu_seconds(*DATABASE_PROCESSES)
    member_cpu = sum(cpu_seconds(p) for p in member_pids(plane, members))
    started = time.perf_counter()
    for member in members:
        spec = pediacluster(
            member.name,
            member.kubeconfig.read_bytes(),
            {"group": "", "resources": ["configmaps", "pods"]},
            {"group": CUSTOM_GROUP, "resources": ["gadgets"]},
        )
        host.kubectl("apply", "-f", "-", input=json.dumps(spec))
    marks = {"rss_quarter_mb": objects // 4, "rss_half_mb": objects // 2}
    deadline = started + 3600
    while True:
        head = await log_head(engine)
        for key, at in list(marks.items()):
            if head >= at:
                figures[key] = rss_mb(pid)
                del marks[key]
        if head >= objects and sum((await stored_per_cluster(engine)).values()) >= objects:
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the sync stored {head} of {objects} objects in an hour")
        await asyncio.sleep(0.25)
    elapsed = time.perf_counter() - started
    per_1k = 1000 / objects
    for index, (replica, before) in enumerate(zip(pids(products), replica_cpu, strict=True)):
        if len(products) > 1:
            figures[f"replica_{index}_cpu_s"] = cpu_seconds(replica) - before
    figures.update(
        initial_sync_s=elapsed,
        objects_per_s=objects / elapsed,
        cpu_s_per_1k_ours=(sum(cpu_seconds(p) for p in pids(products)) - ours) * per_1k,
        cpu_s_per_1k_database=(processes_cpu_seconds(*DATABASE_PROCESSES) - database) * per_1k,
        cpu_s_per_1k_members=(sum(cpu_seconds(p) for p in member_pids(plane, members)) - member_cpu)
        * per_1k,
        rss_full_mb=rss_mb(pid),
    )
    return figures


async def queries(client: Client, *, pods: int, requests: int) -> dict[str, float]:
    """Page, deep page, label search and get by name, at concurrency 1 and 16."""
    figures: dict[str, float] = {}
    # The continue token at half of the Pods, from a walk over every page.
    token, seen, deep_token = "", 0, ""
    walk_started = time.perf_counter()
    while True:
        body = await client.get(f"{PREFIX}/api/v1/pods?limit=500&continue={token}")
        token = continue_of(body)
        seen += 500
        if seen >= pods // 2 and not deep_token:
            deep_token = token
        if not token:
            break
    figures["full_pod_walk_s"] = time.perf_counter() - walk_started
    name = pod(7)["metadata"]["name"]
    operations = {
        "page": f"{PREFIX}/api/v1/pods?limit=500",
        "deep_page": f"{PREFIX}/api/v1/pods?limit=500&continue={deep_token}",
        "label": f"{PREFIX}/api/v1/pods?limit=500&labelSelector=app%3Dapp-42",
        "get": f"{PREFIX}/clusters/member-00/api/v1/namespaces/fleet-7/pods/{name}",
    }
    for label, path in operations.items():

        def operation(path: str = path) -> Awaitable[bytes]:
            return client.get(path)

        for concurrency in (1, 16):
            result = await measure(operation, concurrency=concurrency, requests=requests)
            for key, value in result.items():
                figures[f"{label}_c{concurrency}_{key}"] = value
    return figures


async def watch_lag(
    product: ProductProcess,
    host: APIServer,
    members: list[APIServer],
    *,
    per_member: int,
    rate: int,
    seconds: float,
) -> dict[str, float]:
    """One watcher of every cluster's ConfigMaps through our API; PATCHes go to the members
    in turn, each to one of 50 of its ConfigMaps. Lag = PATCH sent -> its event read by the
    watcher."""
    first = first_configmap(per_member)
    targets = [
        f"{path}/{body['metadata']['name']}"
        for path, body in (planned(per_member, index) for index in range(first, first + 50))
    ]
    sent: dict[tuple[str, str], float] = {}
    lags: list[float] = []
    context = product.front_proxy_context(host)
    headers = {"X-Remote-User": "bench", "X-Remote-Group": "system:masters"}
    changes = int(rate * seconds)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
    ) as session:
        async with session.get(
            f"{product.url}{PREFIX}/api/v1/configmaps?limit=1", headers=headers
        ) as response:
            listed = await response.json()
        start_rv = listed["metadata"]["resourceVersion"]
        watch_path = f"{PREFIX}/api/v1/configmaps?watch=true&resourceVersion={start_rv}"
        received = asyncio.Event()

        async def watch() -> None:
            async with session.get(product.url + watch_path, headers=headers) as response:
                response.raise_for_status()
                async for line in response.content:
                    now = time.perf_counter()
                    event = orjson.loads(line)
                    obj = event["object"]
                    seq = (obj.get("data") or {}).get("seq")
                    cluster = obj["metadata"]["annotations"].get(
                        "shadow.clusterpedia.io/cluster-name", ""
                    )
                    if seq is not None and (cluster, seq) in sent:
                        lags.append(now - sent.pop((cluster, seq)))
                        if len(lags) == changes:
                            received.set()

        watcher = asyncio.create_task(watch())
        clients = [
            KubeClient(access_from_kubeconfig(member.kubeconfig.read_bytes())) for member in members
        ]
        try:
            await asyncio.sleep(1)  # the watch is open
            started = time.perf_counter()
            for seq in range(changes):
                await asyncio.sleep(max(0.0, started + seq / rate - time.perf_counter()))
                turn = seq % len(members)
                target = targets[(seq // len(members)) % len(targets)]
                sent[(members[turn].name, str(seq))] = time.perf_counter()
                await clients[turn].patch(target, {"data": {"seq": str(seq)}})
            await asyncio.wait_for(received.wait(), timeout=60)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            for client in clients:
                await client.close()
    return {
        "watch_lag_p50_ms": statistics.median(lags) * 1000,
        "watch_lag_p99_ms": percentile(lags, 0.99) * 1000,
        "watch_events": len(lags),
    }


def lease_holders(host: APIServer) -> dict[str, str]:
    """cluster -> the replica holding its sync Lease (automatic sharding, default shard)."""
    listed = orjson.loads(
        host.kubectl(
            "get", "leases", "-n", "clusterpedia-system", "-o", "json",
            "-l", "sharding.clusterpedia.io/sync-of=",
        ).stdout
    )  # fmt: skip
    return {
        item["metadata"]["name"].removeprefix("clusterpedia-sync-"): item["spec"].get(
            "holderIdentity", ""
        )
        for item in listed["items"]
    }


def replica_of(identity: str, replicas: int) -> int | None:
    """Which bench replica an identity is (POD_NAME fleet-<i>, then a per-process suffix)."""
    for index in range(replicas):
        if identity.startswith(f"fleet-{index}-"):
            return index
    return None


async def shares(
    engine: Any, host: APIServer, members: list[APIServer], replicas: int
) -> dict[str, float]:
    """Each replica's share of the stored objects, from who holds each cluster's Lease."""
    holders: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while len(holders) < len(members):  # a Lease per cluster, once every one is synced
        holders = lease_holders(host)
        if time.monotonic() > deadline:
            raise TimeoutError(f"sync Leases of {len(holders)} of {len(members)} clusters")
        await asyncio.sleep(0.5)
    stored = await stored_per_cluster(engine)
    total = sum(stored.values())
    per_replica = [0] * replicas
    for cluster, identity in holders.items():
        index = replica_of(identity, replicas)
        if index is not None:
            per_replica[index] += stored.get(cluster, 0)
    figures = {
        f"replica_{index}_share_pct": 100 * count / total for index, count in enumerate(per_replica)
    }
    fair = total / replicas
    figures["share_max_deviation_pct"] = max(abs(c - fair) / fair * 100 for c in per_replica)
    return figures


async def throughput(
    engine: Any,
    members: list[APIServer],
    products: list[ProductProcess],
    plane: ControlPlane,
    *,
    per_member: int,
    seconds: float,
) -> dict[str, float]:
    """Member changes stored per second: PATCHes to 200 ConfigMaps of every member at once
    (64 in flight in all) for ``seconds``, then until every ConfigMap's last change is stored
    (changes of one object within one batch are stored as one: README, "Watch"); and whose
    CPU it took."""
    first = first_configmap(per_member)
    targets = [planned(per_member, index) for index in range(first, first + 200)]
    clients = [
        KubeClient(access_from_kubeconfig(member.kubeconfig.read_bytes())) for member in members
    ]
    cpu = {
        "ours": sum(cpu_seconds(p) for p in pids(products)),
        "database": processes_cpu_seconds(*DATABASE_PROCESSES),
        "members": sum(cpu_seconds(p) for p in member_pids(plane, members)),
    }
    last: dict[tuple[str, str], int] = {}  # (cluster, name) -> the member rv of its last change
    sent = 0
    started = time.perf_counter()
    stop_at = started + seconds

    async def worker(offset: int) -> None:
        nonlocal sent
        turn = offset
        while time.perf_counter() < stop_at:
            member = turn % len(clients)
            path, body = targets[(turn // len(clients)) % len(targets)]
            name = body["metadata"]["name"]
            answer = await clients[member].patch(f"{path}/{name}", {"data": {"seq": str(turn)}})
            key = (members[member].name, name)
            last[key] = max(last.get(key, 0), int(answer["metadata"]["resourceVersion"]))
            sent += 1
            turn += 64

    try:
        await asyncio.gather(*(worker(offset) for offset in range(64)))
    finally:
        for client in clients:
            await client.close()
    deadline = time.perf_counter() + 120
    while pending := await _behind(engine, last):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{pending} of {len(last)} ConfigMaps not stored 120 s later")
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - started
    used = {
        "ours": sum(cpu_seconds(p) for p in pids(products)) - cpu["ours"],
        "database": processes_cpu_seconds(*DATABASE_PROCESSES) - cpu["database"],
        "members": sum(cpu_seconds(p) for p in member_pids(plane, members)) - cpu["members"],
    }
    return {
        "events_per_s": sent / elapsed,
        "throughput_cpu_cores_ours": used["ours"] / elapsed,
        "throughput_cpu_cores_database": used["database"] / elapsed,
        "throughput_cpu_cores_members": used["members"] / elapsed,
    }


async def _behind(engine: Any, last: dict[tuple[str, str], int]) -> int:
    """How many of the (cluster, ConfigMap name) keys are stored older than their rv."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            sa.select(resources.c.cluster, resources.c.name, resources.c.resource_version).where(
                resources.c.resource == "configmaps",
                resources.c.name.in_(sorted({name for _, name in last})),
            )
        )
        stored = {(cluster, name): int(rv) for cluster, name, rv in rows}
    return sum(stored.get(key, 0) < rv for key, rv in last.items())


async def failover(
    engine: Any, host: APIServer, members: list[APIServer], products: list[ProductProcess]
) -> dict[str, float]:
    """``kill -9`` the last replica; the time until a change made in each of its members
    right after the kill is stored (by the replica that takes the cluster over)."""
    replicas, index, victim = len(products), len(products) - 1, products[-1]
    orphans = [
        cluster
        for cluster, identity in lease_holders(host).items()
        if replica_of(identity, replicas) == index
    ]
    if not orphans:
        return {}
    by_name = {member.name: member for member in members}
    victim.kill()
    killed = time.perf_counter()
    expected: dict[str, int] = {}
    for cluster in orphans:
        async with KubeClient(
            access_from_kubeconfig(by_name[cluster].kubeconfig.read_bytes())
        ) as kube:
            path = "/api/v1/namespaces/fleet-0/configmaps/failover-marker"
            try:
                answer = await kube.patch(path, {"data": {"at": str(killed)}})
            except KubeError:
                answer = await kube.post(
                    "/api/v1/namespaces/fleet-0/configmaps",
                    {"metadata": {"name": "failover-marker"}, "data": {"at": str(killed)}},
                )
            expected[cluster] = int(answer["metadata"]["resourceVersion"])
    pending = dict(expected)
    while pending:
        async with engine.connect() as connection:
            rows = await connection.execute(
                sa.select(resources.c.cluster, resources.c.resource_version).where(
                    resources.c.name == "failover-marker", resources.c.cluster.in_(list(pending))
                )
            )
            for cluster, rv in rows:
                if int(rv) >= pending.get(cluster, 0):
                    pending.pop(cluster, None)
        if time.perf_counter() - killed > 300:
            raise TimeoutError(f"clusters {sorted(pending)} not synced again 300 s after the kill")
        await asyncio.sleep(0.1)
    return {"failover_s": time.perf_counter() - killed, "failover_clusters": len(orphans)}


async def run(args: Any) -> dict[str, float]:
    per_member = args.objects // args.members
    objects = per_member * args.members
    figures: dict[str, float] = {
        "members": args.members,
        "objects": objects,
        "replicas": args.replicas,
    }
    # Room for the objects and their history (etcd refuses writes past 2 GB by default).
    etcd_args = ["--quota-backend-bytes=17179869184"]
    with (
        ControlPlane(etcd_args=etcd_args) as plane,
        fresh_database(args.database, label="fleetbench") as url,
    ):
        host = operator_host(plane, front_proxy=True)
        print(f"... starting {args.members} members", file=sys.stderr, flush=True)
        members = start_members(plane, args.members)
        print(f"... seeding {objects:,} objects", file=sys.stderr, flush=True)
        started = time.perf_counter()
        await seed(members, per_member)
        figures["seed_s"] = time.perf_counter() - started
        print(f"... seeded in {figures['seed_s']:.0f}s; syncing", file=sys.stderr, flush=True)
        sharded = args.replicas > 1
        if sharded:  # the Leases' namespace
            host.kubectl("create", "namespace", "clusterpedia-system")
        products = [
            quiet_product(
                host,
                url,
                f"fleet-{index}",
                [*(["--sharding"] if sharded else []), *args.product_arg],
                env={"POD_NAME": f"fleet-{index}"} if sharded else None,
            )
            for index in range(args.replicas)
        ]
        product = products[0]  # the one the queries and the watch go to (every one serves)
        engine = create_engine(url)
        try:
            wait_operator_ready(host)
            figures.update(
                await initial_sync(
                    engine=engine,
                    host=host,
                    members=members,
                    products=products,
                    plane=plane,
                    objects=objects,
                )
            )
            if sharded:
                figures.update(await shares(engine, host, members, args.replicas))
            stored = await stored_per_cluster(engine)
            expected = {member.name: per_member for member in members}
            if stored != expected:
                raise AssertionError(f"stored per cluster {stored}, seeded {expected}")
            sizes = await database_bytes(engine)
            if sizes:
                figures["db_bytes_per_object"] = sizes["database"] / objects
                figures["change_log_bytes_per_object"] = sizes["change_log"] / objects
            print("... queries", file=sys.stderr, flush=True)
            client = Client(product.url, product.front_proxy_context(host))
            try:
                figures.update(
                    await queries(
                        client, pods=per_member * 3 // 10 * args.members, requests=args.requests
                    )
                )
            finally:
                await client.session.close()
            print("... watch lag", file=sys.stderr, flush=True)
            figures.update(
                await watch_lag(
                    product,
                    host,
                    members,
                    per_member=per_member,
                    rate=args.rate,
                    seconds=args.lag_seconds,
                )
            )
            print("... event throughput", file=sys.stderr, flush=True)
            figures.update(
                await throughput(
                    engine,
                    members,
                    products,
                    plane,
                    per_member=per_member,
                    seconds=args.throughput_seconds,
                )
            )
            assert product.process.pid is not None
            figures["rss_end_mb"] = rss_mb(product.process.pid)
            figures["rss_peak_mb"] = peak_rss_mb(product.process.pid)
            if sharded:
                print("... failover after kill -9", file=sys.stderr, flush=True)
                figures.update(await failover(engine, host, members, products))
        finally:
            await engine.dispose()
            for running in products:
                running.stop()
    return figures


ROWS = [
    ("seed_s", "seeding the members through their APIs (s)", "{:.0f}"),
    ("initial_sync_s", "initial sync: apply N PediaClusters -> M rows (s)", "{:.1f}"),
    ("objects_per_s", "objects stored per second", "{:,.0f}"),
    ("cpu_s_per_1k_ours", "CPU s per 1,000 objects: clusterpedia run", "{:.3f}"),
    ("cpu_s_per_1k_database", "CPU s per 1,000 objects: database", "{:.3f}"),
    ("cpu_s_per_1k_members", "CPU s per 1,000 objects: members (apiservers, etcd)", "{:.3f}"),
    ("rss_quarter_mb", "RSS of clusterpedia run at M/4 (MB)", "{:.0f}"),
    ("rss_half_mb", "RSS at M/2 (MB)", "{:.0f}"),
    ("rss_full_mb", "RSS at M (MB)", "{:.0f}"),
    ("rss_peak_mb", "peak RSS, to the end (MB, target < 300)", "{:.0f}"),
    ("db_bytes_per_object", "database size per object (bytes)", "{:,.0f}"),
    ("change_log_bytes_per_object", "  of which the change log (bytes)", "{:,.0f}"),
    ("page_c1_p50_ms", "page of 500 Pods, all clusters: p50 (ms, target < 50)", "{:.1f}"),
    ("page_c1_p99_ms", "  p99 (ms)", "{:.1f}"),
    ("page_c16_p50_ms", "  16 clients: p50 (ms)", "{:.1f}"),
    ("page_c16_p99_ms", "  16 clients: p99 (ms)", "{:.1f}"),
    ("page_c16_rps", "  16 clients: pages/s", "{:.0f}"),
    ("deep_page_c1_p50_ms", "page at half the Pods: p50 (ms)", "{:.1f}"),
    ("label_c1_p50_ms", "label search app=app-42: p50 (ms)", "{:.1f}"),
    ("get_c1_p50_ms", "get by name: p50 (ms)", "{:.2f}"),
    ("get_c16_rps", "get by name, 16 clients: requests/s", "{:.0f}"),
    ("full_pod_walk_s", "every page of every Pod (s)", "{:.1f}"),
    ("watch_lag_p50_ms", "watch lag p50 (ms)", "{:.0f}"),
    ("watch_lag_p99_ms", "watch lag p99 (ms, target < 1000)", "{:.0f}"),
    ("events_per_s", "member changes stored per second (64 PATCHes in flight)", "{:,.0f}"),
    (
        "throughput_cpu_cores_ours",
        "  CPU cores meanwhile: clusterpedia run (all replicas)",
        "{:.2f}",
    ),
    ("throughput_cpu_cores_database", "  CPU cores meanwhile: database", "{:.2f}"),
    ("throughput_cpu_cores_members", "  CPU cores meanwhile: members", "{:.2f}"),
    *(
        (f"replica_{index}_share_pct", f"replica {index}: share of the objects (%)", "{:.1f}")
        for index in range(16)
    ),
    *(
        (f"replica_{index}_cpu_s", f"replica {index}: CPU s of the initial sync", "{:.1f}")
        for index in range(16)
    ),
    ("share_max_deviation_pct", "largest share's distance from 1/R (%, target <= 20)", "{:.1f}"),
    ("failover_clusters", "clusters of the killed replica", "{:.0f}"),
    (
        "failover_s",
        "failover after kill -9: its clusters syncing again (s, target <= 30)",
        "{:.1f}",
    ),
]


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--objects", type=int, default=1_000_000, help="M, in all members")
    parser.add_argument("--requests", type=int, default=200, help="requests per query figure")
    parser.add_argument("--rate", type=int, default=200, help="PATCHes per second (watch lag)")
    parser.add_argument("--lag-seconds", type=float, default=20.0)
    parser.add_argument(
        "--throughput-seconds", type=float, default=20.0, help="the event throughput phase"
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="clusterpedia run replicas, with --sharding if > 1"
    )
    parser.add_argument(
        "--product-arg",
        action="append",
        default=[],
        help="a flag for clusterpedia run, e.g. --product-arg=--page-size=200 (repeatable)",
    )
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args))
    if args.json:
        print(json.dumps({key: round(value, 3) for key, value in figures.items()}))
        return 0
    print(
        f"fleet benchmark ({args.database}, {args.members} members, "
        f"{int(figures['objects']):,} objects, {args.replicas} replicas)"
    )
    print_figures([row for row in ROWS if row[0] in figures], figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
