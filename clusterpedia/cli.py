"""The ``clusterpedia`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from clusterpedia import __version__


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
    run.add_argument(
        "--peering",
        action="store_true",
        default=os.environ.get("CLUSTERPEDIA_PEERING") == "true",
        help="coordinate replicas with Kopf peering so one syncs (env CLUSTERPEDIA_PEERING=true)",
    )
    run.add_argument(
        "--priority",
        type=int,
        default=int(os.environ.get("CLUSTERPEDIA_PRIORITY", "0") or 0),
        help="peering priority; give replicas distinct values (env CLUSTERPEDIA_PRIORITY)",
    )
    run.add_argument(
        "--log-level",
        default=os.environ.get("CLUSTERPEDIA_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING (env CLUSTERPEDIA_LOG_LEVEL)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; non-zero if a component died on its own."""
    from clusterpedia.operator.handlers import OperatorConfig
    from clusterpedia.operator.runner import OperatorThread
    from clusterpedia.storage.config import describe, resolve_storage_url
    from clusterpedia.storage.engine import StorageURLError

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        url = resolve_storage_url(flag=args.storage_url, config_file=args.storage_config)
    except StorageURLError as error:
        print(f"clusterpedia: {error}", file=sys.stderr)
        return 2
    print(f"clusterpedia-py {__version__}: storage {describe(url)}", file=sys.stderr, flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    operator = OperatorThread(
        OperatorConfig(storage_url=url, kubeconfig=args.kubeconfig),
        standalone=not args.peering,
        priority=args.priority,
    )
    try:
        operator.start()
    except RuntimeError as error:
        print(f"clusterpedia: {error}", file=sys.stderr)
        return 1
    while not stop.wait(1.0):
        if operator.failed:
            print(f"clusterpedia: the operator stopped: {operator.error!r}", file=sys.stderr)
            return 1
    operator.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"clusterpedia-py {__version__}")
        return 0
    if args.command == "run":
        return run(args)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects the rest


if __name__ == "__main__":
    sys.exit(main())
