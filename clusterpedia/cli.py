"""The ``clusterpedia`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import random
import resource
import signal
import sys
import threading
from asyncio import sslproto
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from clusterpedia import __version__, memory


def _switch(parser: argparse.ArgumentParser, flag: str, text: str) -> None:
    """An on/off option: the flag, or ``CLUSTERPEDIA_<FLAG>=true``."""
    env = "CLUSTERPEDIA_" + flag.removeprefix("--").replace("-", "_").upper()
    parser.add_argument(
        flag,
        action="store_true",
        default=os.environ.get(env) == "true",
        help=f"{text} (env {env}=true)",
    )


def _number(
    parser: argparse.ArgumentParser,
    flag: str,
    kind: type[int] | type[float],
    default: str,
    text: str,
) -> None:
    """A numeric tuning option: the flag, else ``CLUSTERPEDIA_<FLAG>``, else ``default``."""
    env = "CLUSTERPEDIA_" + flag.removeprefix("--").replace("-", "_").upper()
    parser.add_argument(
        flag,
        type=kind,
        default=kind(os.environ.get(env, default)),
        help=f"{text} (env {env}; default {default})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clusterpedia",
        description="The encyclopedia of Kubernetes clusters: sync many clusters into SQL "
        "and search them through one Kubernetes-style API.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("version", help="print the version and exit")
    run = commands.add_parser(
        "run", help="run the operator (sync PediaClusters into the storage) until SIGTERM"
    )
    run.add_argument(
        "--storage-url",
        default=os.environ.get("CLUSTERPEDIA_STORAGE_URL"),
        help="sqlite:///PATH, postgresql+psycopg://..., mysql+pymysql://... "
        "(env CLUSTERPEDIA_STORAGE_URL; default: sqlite:///clusterpedia.sqlite)",
    )
    run.add_argument(
        "--storage-config",
        default=os.environ.get("CLUSTERPEDIA_STORAGE_CONFIG"),
        help="a storage config file (env CLUSTERPEDIA_STORAGE_CONFIG)",
    )
    run.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="the host cluster's kubeconfig (env KUBECONFIG; default: in-cluster)",
    )
    _switch(run, "--peering", "coordinate replicas with Kopf peering so one syncs")
    run.add_argument(
        "--peering-name",
        default=os.environ.get("CLUSTERPEDIA_PEERING_NAME", "clusterpedia"),
        help="the ClusterKopfPeering object replicas share (env CLUSTERPEDIA_PEERING_NAME; "
        "default clusterpedia)",
    )
    run.add_argument(
        "--priority",
        type=_priority,
        default=os.environ.get("CLUSTERPEDIA_PRIORITY", "0") or "0",
        help="peering priority, an integer or 'random' (replicas need distinct values; "
        "env CLUSTERPEDIA_PRIORITY)",
    )
    run.add_argument(
        "--secure-port",
        type=int,
        default=int(os.environ.get("CLUSTERPEDIA_SECURE_PORT", "8443")),
        help="HTTPS port of the API server (env CLUSTERPEDIA_SECURE_PORT; default 8443)",
    )
    run.add_argument(
        "--bind-address",
        default=os.environ.get("CLUSTERPEDIA_BIND_ADDRESS", "0.0.0.0"),
        help="address to listen on (env CLUSTERPEDIA_BIND_ADDRESS; default 0.0.0.0)",
    )
    run.add_argument(
        "--tls-cert-file",
        default=os.environ.get("CLUSTERPEDIA_TLS_CERT_FILE"),
        help="serving certificate (PEM, with its chain; env CLUSTERPEDIA_TLS_CERT_FILE); "
        "default: a generated self-signed one",
    )
    run.add_argument(
        "--tls-private-key-file",
        default=os.environ.get("CLUSTERPEDIA_TLS_PRIVATE_KEY_FILE"),
        help="the serving certificate's private key (PEM; env CLUSTERPEDIA_TLS_PRIVATE_KEY_FILE)",
    )
    run.add_argument(
        "--cert-dir",
        default=os.environ.get("CLUSTERPEDIA_CERT_DIR"),
        help="where a generated self-signed certificate and its CA are written "
        "(env CLUSTERPEDIA_CERT_DIR)",
    )
    _switch(run, "--authorize-clusters", "users see only clusters whose PediaCluster they may get")
    _switch(
        run,
        "--allow-where-sql",
        "accept the whereSQLStatement search parameter (a condition over the row's columns "
        "and JSON; see the README for what it accepts)",
    )
    _switch(
        run,
        "--allow-http-credentials",
        "send a PediaCluster's token or password to an http:// member (in clear text); "
        "refused by default",
    )
    _switch(run, "--no-operator", "serve only: do not run the operator in this process")
    _number(
        run,
        "--max-requests-inflight",
        int,
        "400",
        "requests served at once (watches are counted apart); more get 429 with Retry-After",
    )
    _number(
        run, "--max-watches", int, "2000", "watches open at once; more get 429 with Retry-After"
    )
    _number(
        run,
        "--request-timeout",
        float,
        "60",
        "seconds a request other than a watch may take, sending its answer included; "
        "then 504, or the connection is closed",
    )
    _number(run, "--page-size", int, "500", "objects per page of a member list (the original's)")
    _number(
        run,
        "--kube-api-qps",
        float,
        "50",
        "requests per second to each member, on average (the original's; 0: no limit)",
    )
    _number(run, "--kube-api-burst", int, "100", "requests to each member at once (the original's)")
    _number(
        run,
        "--member-list-concurrency",
        int,
        "4",
        "lists of one member running at the same time (initial lists and relists)",
    )
    _number(
        run,
        "--max-concurrent-lists",
        int,
        "4",
        "lists running at the same time in this process, all members together: each holds"
        " a few pages of parsed objects, so this bounds the memory of a fleet's initial sync",
    )
    _number(
        run,
        "--shutdown-grace-period",
        float,
        "25",
        "seconds from SIGTERM to exit: in-flight requests may finish meanwhile; at the end the "
        "process exits whatever is still running (keep it below the pod's "
        "terminationGracePeriodSeconds, 30 by default)",
    )
    _number(
        run,
        "--idle-connection-timeout",
        float,
        "90",
        "seconds a connection may take to send a complete request (after opening, or after "
        "its last answer) before it is closed",
    )
    _number(
        run,
        "--max-object-bytes",
        int,
        "8388608",
        "member objects larger than this many bytes (8 MiB; as stored) are not stored; the "
        "PediaCluster's status names them",
    )
    _switch(
        run,
        "--store-secret-data",
        "store the data and stringData of synced Secrets; by default they are dropped "
        "before storing",
    )
    _number(
        run,
        "--change-log-max-age",
        float,
        "900",
        "seconds of changes kept for watches to resume from; older ones get 410 and relist "
        "(0: no age limit)",
    )
    _number(
        run,
        "--change-log-max-events",
        int,
        "200000",
        "changes kept at most, whatever their age (0: no count limit)",
    )
    _number(
        run,
        "--watch-queue-size",
        int,
        "1000",
        "events a watcher may fall behind before it is cut with 410",
    )
    _number(
        run,
        "--watch-bookmark-interval",
        float,
        "30",
        "seconds between BOOKMARK events for watches that allow them",
    )
    _number(
        run,
        "--watch-poll-interval",
        float,
        "0.2",
        "seconds between reads of the change log on SQLite and MySQL (PostgreSQL is woken "
        "by NOTIFY)",
    )
    run.add_argument(
        "--log-level",
        default=os.environ.get("CLUSTERPEDIA_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING (env CLUSTERPEDIA_LOG_LEVEL)",
    )
    certs = commands.add_parser(
        "certs",
        help="write a serving certificate Secret and the APIService trusting it",
        description="Write a new CA and serving certificate for "
        "clusterpedia-apiserver.<namespace>.svc: tls-secret.yaml and apiservice.yaml (caBundle "
        "set) for `kubectl apply -f DIR`, plus the PEM files.",
    )
    certs.add_argument(
        "--output",
        default=os.environ.get("CLUSTERPEDIA_CERTS_OUTPUT", "clusterpedia-certs"),
        help="directory to write into (env CLUSTERPEDIA_CERTS_OUTPUT; "
        "default ./clusterpedia-certs)",
    )
    certs.add_argument(
        "--namespace",
        default=os.environ.get("CLUSTERPEDIA_NAMESPACE", "clusterpedia-system"),
        help="where clusterpedia runs (env CLUSTERPEDIA_NAMESPACE)",
    )
    certs.add_argument(
        "--host",
        action="append",
        default=[h for h in os.environ.get("CLUSTERPEDIA_CERTS_HOSTS", "").split(",") if h],
        help="another DNS name or IP for the certificate, repeatable "
        "(env CLUSTERPEDIA_CERTS_HOSTS, comma-separated)",
    )
    playground = commands.add_parser(
        "playground",
        help="run a host and two member clusters locally, synced and served as a real install",
        description="Provision the test binaries, start a host and two member kube-apiservers "
        "with realistic objects, sync them as PediaClusters member-1 and member-2 and serve "
        "them through the host's aggregation layer; write a kubeconfig; stop on Ctrl-C.",
    )
    playground.add_argument(
        "--kubeconfig",
        default=os.environ.get("CLUSTERPEDIA_PLAYGROUND_KUBECONFIG", "playground.kubeconfig"),
        help="the kubeconfig to write (env CLUSTERPEDIA_PLAYGROUND_KUBECONFIG; "
        "default ./playground.kubeconfig)",
    )
    playground.add_argument(
        "--workdir",
        default=os.environ.get("CLUSTERPEDIA_PLAYGROUND_WORKDIR"),
        help="where the clusters and the database live (env CLUSTERPEDIA_PLAYGROUND_WORKDIR; "
        "default: a new temporary directory)",
    )
    kubeconfig = commands.add_parser(
        "kubeconfig",
        help="add a 'clusterpedia' cluster and one per PediaCluster to a kubeconfig",
        description="Add cluster entries whose server is the host's Clusterpedia API, so that "
        "`kubectl --cluster clusterpedia get pods -A` works with the current user.",
    )
    kubeconfig.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config")),
        help="the kubeconfig to read, its current context being the host (env KUBECONFIG; "
        "default ~/.kube/config)",
    )
    kubeconfig.add_argument(
        "--output",
        default=os.environ.get("CLUSTERPEDIA_KUBECONFIG_OUTPUT"),
        help="write here instead of back to --kubeconfig (env CLUSTERPEDIA_KUBECONFIG_OUTPUT)",
    )
    return parser


def _priority(value: str) -> int:
    """An integer, or ``random``: a distinct priority per replica without coordination."""
    if value == "random":
        return random.randint(1, 2**30)
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer or 'random': {value!r}") from None


def write_certs(args: argparse.Namespace) -> int:
    from clusterpedia.certs import write_serving_certs

    for path in write_serving_certs(
        Path(args.output), namespace=args.namespace, extra_hosts=args.host
    ):
        print(f"wrote {path}")
    print(
        f"next: kubectl apply -f {Path(args.output) / 'tls-secret.yaml'} "
        f"-f {Path(args.output) / 'apiservice.yaml'}"
    )
    return 0


def write_kubeconfig(args: argparse.Namespace) -> int:
    from clusterpedia.kube.client import KubeError
    from clusterpedia.kubeconfig import KubeconfigError, generate

    try:
        written, skipped = generate(
            Path(args.kubeconfig), output=Path(args.output) if args.output else None
        )
    except (OSError, KubeconfigError, KubeError) as error:
        print(f"clusterpedia kubeconfig: {error}", file=sys.stderr)
        return 1
    for name in written:
        print(f"cluster {name}: written")
    for name in skipped:
        print(f"cluster {name}: skipped (exists and does not point at Clusterpedia)")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the API server and the operator until SIGTERM/SIGINT; non-zero if either died."""
    from clusterpedia.storage import StorageURLError, describe, resolve_storage_url

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        url = resolve_storage_url(flag=args.storage_url, config_file=args.storage_config)
    except StorageURLError as error:
        print(f"clusterpedia: {error}", file=sys.stderr)
        return 2
    print(f"clusterpedia-py {__version__}: storage {describe(url)}", file=sys.stderr, flush=True)
    raise_open_file_limit()
    memory.limit_malloc_arenas()
    return asyncio.run(_serve(args, url))


def raise_open_file_limit(ceiling: int = 1 << 20) -> int:
    """Raise the soft open-file limit to the hard one and say so: every watch holds a
    connection, so N members x T types need N x T descriptors and more (README, "Serving")."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as error:
            print(f"clusterpedia: cannot raise the open-file limit: {error}", file=sys.stderr)
    print(f"clusterpedia: open-file limit {soft}", file=sys.stderr, flush=True)
    return int(soft)


def tune_garbage_collector() -> None:
    """Collect young objects every 50,000 allocations instead of 700, and freeze what start-up
    allocated. A member's list page parses into ~100k dicts and lists that live until the
    page is stored; with the defaults the collector ran ~150 times per page and re-scanned
    every survivor, a third of the sync's CPU (reference/performance.md: "parse and keep" is
    10x slower than "parse and discard"). Nearly everything here is freed by reference
    counting; cycles are still collected, just less often."""
    gc.set_threshold(50_000, 20, 20)
    gc.freeze()


def limit_tls_read_buffers(size: int = 64 * 1024) -> None:
    """asyncio gives every TLS connection a zero-filled, so resident, read buffer of 256 KiB
    (``asyncio.sslproto.SSLProtocol.max_size``, CPython 3.11+): 1,000 open watches held
    ~250 MB of them. TLS records are at most 16 KiB, so 64 KiB still takes several per read
    (bench/watch.py measures the RSS of 1,000 idle watchers)."""
    protocol = getattr(sslproto, "SSLProtocol", None)
    if protocol is not None and getattr(protocol, "max_size", 0) > size:
        protocol.max_size = size


async def _print_clusters(server: Any) -> None:
    """Say which PediaClusters the host has (a start-up line, never fatal)."""
    from clusterpedia.kube.client import KubeError

    try:
        found = await server.host.get("/apis/cluster.clusterpedia.io/v1alpha2/pediaclusters")
    except KubeError as error:
        print(f"clusterpedia: cannot list PediaClusters: {error}", file=sys.stderr, flush=True)
        return
    names = sorted(item["metadata"]["name"] for item in found.get("items") or [])
    listed = ", ".join(names) if names else "none yet"
    print(f"clusterpedia: {len(names)} PediaClusters: {listed}", file=sys.stderr, flush=True)


async def _serve(args: argparse.Namespace, url: str) -> int:
    from clusterpedia.apiserver.server import APIServer, ServerConfig
    from clusterpedia.apiserver.watch import WatchSettings
    from clusterpedia.watch.retention import Retention

    limit_tls_read_buffers()  # before the listener accepts a connection
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = APIServer(
        ServerConfig(
            storage_url=url,
            kubeconfig=args.kubeconfig,
            bind_address=args.bind_address,
            port=args.secure_port,
            cert_file=args.tls_cert_file,
            key_file=args.tls_private_key_file,
            cert_dir=args.cert_dir,
            check_clusters=args.authorize_clusters,
            allow_where_sql=args.allow_where_sql,
            watch=WatchSettings(
                capacity=args.watch_queue_size, bookmark_interval=args.watch_bookmark_interval
            ),
            watch_poll_interval=args.watch_poll_interval,
            max_requests_inflight=args.max_requests_inflight,
            max_watches=args.max_watches,
            request_timeout=args.request_timeout,
            idle_connection_timeout=args.idle_connection_timeout,
            retention=Retention(
                max_age=timedelta(seconds=args.change_log_max_age)
                if args.change_log_max_age > 0
                else None,
                max_events=args.change_log_max_events or None,
            ),
        )
    )
    try:
        await server.start()
    except Exception as error:
        print(f"clusterpedia: the API server failed to start: {error}", file=sys.stderr)
        await server.stop()
        return 1
    print(f"clusterpedia: serving https://{args.bind_address}:{server.port}", file=sys.stderr)
    await _print_clusters(server)
    operator = None
    if not args.no_operator:
        # Only here: Kopf and the kubernetes client it loads hold 50 MB that a server run
        # with --no-operator has no use for.
        from clusterpedia.operator.handlers import OperatorConfig
        from clusterpedia.operator.runner import OperatorThread
        from clusterpedia.sync.worker import SyncSettings

        operator = OperatorThread(
            OperatorConfig(
                storage_url=url,
                kubeconfig=args.kubeconfig,
                sync=SyncSettings(
                    store_secret_data=args.store_secret_data,
                    max_object_bytes=args.max_object_bytes,
                    page_size=args.page_size,
                    kube_api_qps=args.kube_api_qps,
                    kube_api_burst=args.kube_api_burst,
                    list_concurrency=args.member_list_concurrency,
                    process_list_concurrency=args.max_concurrent_lists,
                ),
                allow_http_credentials=args.allow_http_credentials,
            ),
            standalone=not args.peering,
            priority=args.priority,
            peering_name=args.peering_name,
        )
        try:
            await loop.run_in_executor(None, operator.start)
        except RuntimeError as error:
            print(f"clusterpedia: {error}", file=sys.stderr)
            await server.stop()
            return 1
    tune_garbage_collector()
    trimmer = asyncio.create_task(memory.trim_freed_memory(), name="memory trimmer")
    code = 0
    # One shared shutdown: a signal stops both sides; the operator dying stops the server.
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        if operator is not None and operator.failed:
            print(f"clusterpedia: the operator stopped: {operator.error!r}", file=sys.stderr)
            code = 1
            break
    trimmer.cancel()
    exit_by_deadline(args.shutdown_grace_period)
    if operator is not None:
        await loop.run_in_executor(None, operator.stop)
    await server.stop()
    return code


def exit_by_deadline(seconds: float) -> None:
    """End the process ``seconds`` from now if the orderly shutdown has not: a query or a
    thread that does not stop must not hold the pod until the kubelet's SIGKILL."""

    def hard_exit() -> None:
        print(
            f"clusterpedia: shutdown took longer than {seconds:g}s; exiting now",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)

    timer = threading.Timer(seconds, hard_exit)
    timer.daemon = True  # still running while the interpreter joins other threads at exit
    timer.start()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"clusterpedia-py {__version__}")
        return 0
    if args.command == "run":
        return run(args)
    if args.command == "kubeconfig":
        return write_kubeconfig(args)
    if args.command == "certs":
        return write_certs(args)
    if args.command == "playground":
        from clusterpedia.playground import run_playground

        logging.basicConfig(level=logging.WARNING)
        path = Path(args.kubeconfig).resolve()
        print(f"clusterpedia playground: kubeconfig {path}", file=sys.stderr, flush=True)
        return run_playground(
            kubeconfig=path, workdir=Path(args.workdir).resolve() if args.workdir else None
        )
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects the rest


if __name__ == "__main__":
    sys.exit(main())
