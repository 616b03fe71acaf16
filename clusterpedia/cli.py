"""The ``clusterpedia`` command line."""

from __future__ import annotations

import argparse
import sys
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"clusterpedia-py {__version__}")
        return 0
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects the rest


if __name__ == "__main__":
    sys.exit(main())
