"""The ``clusterpedia`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from clusterpedia import __version__
from clusterpedia.settings import RunSettings, add_arguments


class _Parser(argparse.ArgumentParser):
    """A bad flag is one line naming it and where to read more (argparse would print the whole
    usage first, burying the cause)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="clusterpedia",
        description="The encyclopedia of Kubernetes clusters: sync many clusters into SQL "
        "and search them through one Kubernetes-style API.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("version", help="print the version and exit")
    run = commands.add_parser(
        "run", help="run the operator (sync PediaClusters into the storage) until SIGTERM"
    )
    add_arguments(run)
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
    kubeconfig.add_argument(
        "--original-paths",
        action="store_true",
        default=os.environ.get("CLUSTERPEDIA_KUBECONFIG_ORIGINAL_PATHS", "") == "true",
        help="write the original's .../v1beta1/resources paths, which the host cuts after its "
        "--request-timeout (env CLUSTERPEDIA_KUBECONFIG_ORIGINAL_PATHS=true; default: "
        ".../v1beta1/proxy/resources, which it does not; users need the proxy verb on "
        "clusterpedia.io resources there)",
    )
    role = commands.add_parser(
        "member-role",
        help="print a member ClusterRole that lets reach-through impersonate only named users",
        description="Print the clusterpedia-member-impersonator ClusterRole for a member, its "
        "resourceNames the names those host users and groups have on members (RBAC cannot "
        "match a prefix, so each is listed).",
    )
    for flag, env, what in (
        ("--users", "CLUSTERPEDIA_MEMBER_ROLE_USERS", "host users, comma-separated"),
        ("--groups", "CLUSTERPEDIA_MEMBER_ROLE_GROUPS", "host groups, comma-separated"),
        ("--impersonate-user-prefix", "CLUSTERPEDIA_IMPERSONATE_USER_PREFIX", "as run takes it"),
        ("--impersonate-group-prefix", "CLUSTERPEDIA_IMPERSONATE_GROUP_PREFIX", "as run takes it"),
    ):
        role.add_argument(flag, default=os.environ.get(env, ""), help=f"{what} (env {env})")
    return parser


def print_member_role(args: argparse.Namespace) -> int:
    import yaml

    from clusterpedia.apiserver.members import IdentityMapping, impersonation_role
    from clusterpedia.apiserver.status import StatusError

    mapping = IdentityMapping(
        user_prefix=args.impersonate_user_prefix, group_prefix=args.impersonate_group_prefix
    )
    try:
        role = impersonation_role(
            mapping,
            users=[user for user in args.users.split(",") if user],
            groups=[group for group in args.groups.split(",") if group],
        )
    except StatusError as error:
        print(f"clusterpedia member-role: {error.message}", file=sys.stderr)
        return 1
    print(yaml.safe_dump(role, sort_keys=False), end="")
    return 0


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
            Path(args.kubeconfig),
            output=Path(args.output) if args.output else None,
            original_paths=args.original_paths,
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
    from clusterpedia import compose, memory, process
    from clusterpedia.features import FeatureGateError, parse_feature_gates
    from clusterpedia.storage import StorageURLError, add_transient_codes, resolve_storage

    settings = RunSettings.from_arguments(args)
    logging.basicConfig(
        level=settings.process.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        gates = parse_feature_gates(settings.process.feature_gates)
    except FeatureGateError as error:
        print(f"clusterpedia: --feature-gates: {error}", file=sys.stderr)
        return 2
    if settings.operator.sharding and settings.operator.peering:
        print(
            "clusterpedia: --sharding and --peering exclude each other: with --sharding every "
            "replica syncs its share, with --peering one replica syncs and the others wait",
            file=sys.stderr,
        )
        return 2
    if settings.operator.sharding_lease_duration < 3:
        print("clusterpedia: --sharding-lease-duration must be at least 3 seconds", file=sys.stderr)
        return 2
    try:
        compose.reach_policy(settings.reach)
    except ValueError as error:
        print(f"clusterpedia: {error}", file=sys.stderr)
        return 2
    for note in gates.notes:
        logging.getLogger("clusterpedia").info("feature gate %s", note)
    storage = settings.storage
    try:
        target = resolve_storage(
            flag=storage.storage_url,
            config_file=storage.storage_config,
            read_flag=storage.read_storage_url,
        )
    except StorageURLError as error:
        print(f"clusterpedia: {error}", file=sys.stderr)
        return 2
    print(
        f"clusterpedia-py {__version__}: storage {target.describe()}", file=sys.stderr, flush=True
    )
    for notice in target.notices:
        logging.getLogger("clusterpedia.storage").warning("storage config %s", notice)
    add_transient_codes(target.transient_codes)
    process.raise_open_file_limit()
    memory.limit_malloc_arenas()
    return asyncio.run(compose.serve(settings, target))


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
    if args.command == "member-role":
        return print_member_role(args)
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
