"""Every setting of ``clusterpedia run``, declared once: flag, environment variable, default,
help and type. The command line is generated from this tree and read back into it, so a
setting cannot exist as a flag without a typed home, nor be copied by hand from one object
into another (``compose.py`` hands each part its own section).

Each option is ``--flag``, else ``CLUSTERPEDIA_<FLAG>`` (``KUBECONFIG`` for ``--kubeconfig``),
else its default; an on/off switch is on with the flag or ``CLUSTERPEDIA_<FLAG>=true``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, get_type_hints


def _env_of(flag: str) -> str:
    return "CLUSTERPEDIA_" + flag.removeprefix("--").replace("-", "_").upper()


def option(
    flag: str,
    default: Any,
    text: str,
    *,
    parse: Callable[[str], Any] = str,
    env: str | None = None,
    switch: bool = False,
) -> Any:
    """A field of a settings section with what its command-line option needs."""
    return field(
        default=default,
        metadata={"flag": flag, "env": env or _env_of(flag), "text": text, "parse": parse,
                  "switch": switch},
    )  # fmt: skip


def priority(value: str) -> int:
    """An integer, or ``random``: a distinct priority per replica without coordination."""
    if value == "random":
        return random.randint(1, 2**30)
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer or 'random': {value!r}") from None


@dataclass(frozen=True)
class StorageOptions:
    storage_url: str | None = option(
        "--storage-url",
        None,
        "sqlite:///PATH, postgresql+psycopg://..., mysql+pymysql://... "
        "(default: sqlite:///clusterpedia.sqlite)",
    )
    storage_config: str | None = option("--storage-config", None, "a storage config file")
    read_storage_url: str | None = option(
        "--read-storage-url",
        None,
        "a streaming replica of the storage (PostgreSQL hot standby, MySQL/MariaDB replica): "
        "list, get and watch read there, writes go to --storage-url "
        "(env CLUSTERPEDIA_READ_STORAGE_URL; the config file's readReplica)",
    )
    read_storage_max_lag: float = option(
        "--read-storage-max-lag",
        30.0,
        "seconds the read replica may fall behind before /readyz fails",
        parse=float,
    )


@dataclass(frozen=True)
class HostOptions:
    kubeconfig: str | None = option(
        "--kubeconfig",
        None,
        "the host cluster's kubeconfig (default: in-cluster)",
        env="KUBECONFIG",
    )


@dataclass(frozen=True)
class ServingOptions:
    secure_port: int = option("--secure-port", 8443, "HTTPS port of the API server", parse=int)
    bind_address: str = option("--bind-address", "0.0.0.0", "address to listen on")
    tls_cert_file: str | None = option(
        "--tls-cert-file",
        None,
        "serving certificate (PEM, with its chain); default: a generated self-signed one",
    )
    tls_private_key_file: str | None = option(
        "--tls-private-key-file", None, "the serving certificate's private key (PEM)"
    )
    cert_dir: str | None = option(
        "--cert-dir", None, "where a generated self-signed certificate and its CA are written"
    )
    authorize_clusters: bool = option(
        "--authorize-clusters",
        False,
        "users see only clusters whose PediaCluster they may get",
        switch=True,
    )
    allow_where_sql: bool = option(
        "--allow-where-sql",
        False,
        "accept the whereSQLStatement search parameter (a condition over the row's columns "
        "and JSON; see the README for what it accepts)",
        switch=True,
    )
    max_requests_inflight: int = option(
        "--max-requests-inflight",
        400,
        "requests served at once (watches are counted apart); more get 429 with Retry-After",
        parse=int,
    )
    max_watches: int = option(
        "--max-watches", 2000, "watches open at once; more get 429 with Retry-After", parse=int
    )
    request_timeout: float = option(
        "--request-timeout",
        60.0,
        "seconds a request other than a watch may take, sending its answer included; "
        "then 504, or the connection is closed",
        parse=float,
    )
    idle_connection_timeout: float = option(
        "--idle-connection-timeout",
        90.0,
        "seconds a connection may take to send a complete request (after opening, or after "
        "its last answer) before it is closed",
        parse=float,
    )


@dataclass(frozen=True)
class ReachOptions:
    """What may reach through to members (the original's flags, same names)."""

    allowed_proxy_subresources: str = option(
        "--allowed-proxy-subresources",
        "pods/log,pods/exec,pods/attach,pods/portforward",
        "subresources that reach the member, '[resource/]subresource,...' of pods/{log,exec,"
        "attach,portforward,proxy}, nodes/proxy, services/proxy; empty: none",
    )
    allow_forward_unsync_resource_request: bool = option(
        "--allow-forward-unsync-resource-request",
        False,
        "a read of a type a cluster does not sync is answered by the member (and the "
        "cluster's discovery is the member's)",
        switch=True,
    )
    enable_proxy_path_for_forward_request: bool = option(
        "--enable-proxy-path-for-forward-request",
        False,
        "serve .../resources/clusters/<c>/proxy/<any member path>, every method",
        switch=True,
    )
    allow_pediacluster_config_for_proxy_request: bool = option(
        "--allow-pediacluster-config-for-proxy-request",
        False,
        "requests reaching members act there with the PediaCluster's credentials instead of "
        "as the requesting user (unsafe: see the README)",
        switch=True,
    )
    member_response_timeout: float = option(
        "--member-response-timeout",
        30.0,
        "seconds a member may take to start answering a request that reaches it (its headers, "
        "or a session's handshake; connecting has 10 s); then 503",
        parse=float,
    )
    impersonate_user_prefix: str = option(
        "--impersonate-user-prefix",
        "",
        "what a requesting user is named on members: '<prefix><user>' (e.g. 'clusterpedia:'); "
        "without one, host ServiceAccounts and other system: users cannot reach members",
    )
    impersonate_group_prefix: str = option(
        "--impersonate-group-prefix",
        "",
        "what a requesting user's groups are named on members: '<prefix><group>'; system: "
        "groups are never passed on, but system:authenticated",
    )


@dataclass(frozen=True)
class WatchOptions:
    change_log_max_age: float = option(
        "--change-log-max-age",
        900.0,
        "seconds of changes kept for watches to resume from; older ones get 410 and relist "
        "(0: no age limit)",
        parse=float,
    )
    change_log_max_events: int = option(
        "--change-log-max-events",
        200000,
        "changes kept at most, whatever their age (0: no count limit)",
        parse=int,
    )
    watch_queue_size: int = option(
        "--watch-queue-size",
        1000,
        "events a watcher may fall behind before it is cut with 410",
        parse=int,
    )
    watch_bookmark_interval: float = option(
        "--watch-bookmark-interval",
        30.0,
        "seconds between BOOKMARK events for watches that allow them",
        parse=float,
    )
    watch_poll_interval: float = option(
        "--watch-poll-interval",
        0.2,
        "seconds between reads of the change log on SQLite and MySQL (PostgreSQL is woken "
        "by NOTIFY)",
        parse=float,
    )


@dataclass(frozen=True)
class SyncOptions:
    page_size: int = option(
        "--page-size", 500, "objects per page of a member list (the original's)", parse=int
    )
    kube_api_qps: float = option(
        "--kube-api-qps",
        50.0,
        "requests per second to each member, on average (the original's; 0: no limit)",
        parse=float,
    )
    kube_api_burst: int = option(
        "--kube-api-burst", 100, "requests to each member at once (the original's)", parse=int
    )
    member_list_concurrency: int = option(
        "--member-list-concurrency",
        4,
        "lists of one member running at the same time (initial lists and relists)",
        parse=int,
    )
    max_concurrent_lists: int = option(
        "--max-concurrent-lists",
        4,
        "lists running at the same time in this process, all members together: each holds"
        " a few pages of parsed objects, so this bounds the memory of a fleet's initial sync",
        parse=int,
    )
    max_object_bytes: int = option(
        "--max-object-bytes",
        8388608,
        "member objects larger than this many bytes (8 MiB; as stored) are not stored; the "
        "PediaCluster's status names them",
        parse=int,
    )
    store_secret_data: bool = option(
        "--store-secret-data",
        False,
        "store the data and stringData of synced Secrets; by default they are dropped "
        "before storing",
        switch=True,
    )
    allow_http_credentials: bool = option(
        "--allow-http-credentials",
        False,
        "send a PediaCluster's token or password to an http:// member (in clear text); "
        "refused by default",
        switch=True,
    )


@dataclass(frozen=True)
class OperatorOptions:
    no_operator: bool = option(
        "--no-operator", False, "serve only: do not run the operator in this process", switch=True
    )
    peering: bool = option(
        "--peering", False, "coordinate replicas with Kopf peering so one syncs", switch=True
    )
    peering_name: str = option(
        "--peering-name", "clusterpedia", "the ClusterKopfPeering object replicas share"
    )
    sharding_name: str = option(
        "--sharding-name",
        "",
        "sync only the PediaClusters whose spec.shardingName is this (the original's flag; "
        "'' = those without one); with --peering, each shard peers on its own "
        "ClusterKopfPeering (default name clusterpedia-<shard>)",
    )
    priority: int = option(
        "--priority",
        0,
        "peering priority, an integer or 'random' (replicas need distinct values)",
        parse=priority,
    )
    sharding: bool = option(
        "--sharding",
        False,
        "automatic sharding: every replica started with it syncs its share of the shard's "
        "PediaClusters, one replica per cluster, on Leases in CLUSTERPEDIA_NAMESPACE "
        "(excludes --peering)",
        switch=True,
    )
    sharding_lease_duration: float = option(
        "--sharding-lease-duration",
        15.0,
        "seconds a replica's Leases last unrenewed: a dead replica's clusters move after "
        "about this long; a replica that cannot renew stops syncing after half of it",
        parse=float,
    )


@dataclass(frozen=True)
class ProcessOptions:
    shutdown_grace_period: float = option(
        "--shutdown-grace-period",
        25.0,
        "seconds from SIGTERM to exit: in-flight requests may finish meanwhile; at the end the "
        "process exits whatever is still running (keep it below the pod's "
        "terminationGracePeriodSeconds, 30 by default)",
        parse=float,
    )
    log_level: str = option("--log-level", "INFO", "DEBUG, INFO, WARNING")
    feature_gates: str = option(
        "--feature-gates",
        "",
        "the original's gates, Name=true,Name=false (the README says how each stands here; "
        "an unknown one, or a value we cannot honour, stops the start)",
    )


@dataclass(frozen=True)
class RunSettings:
    """``clusterpedia run``: one section per part it wires."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    host: HostOptions = field(default_factory=HostOptions)
    serving: ServingOptions = field(default_factory=ServingOptions)
    reach: ReachOptions = field(default_factory=ReachOptions)
    watch: WatchOptions = field(default_factory=WatchOptions)
    sync: SyncOptions = field(default_factory=SyncOptions)
    operator: OperatorOptions = field(default_factory=OperatorOptions)
    process: ProcessOptions = field(default_factory=ProcessOptions)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> RunSettings:
        """The settings ``add_arguments``' options parsed into."""
        return cls(
            **{
                name: section(
                    **{o.name: getattr(args, o.name) for o in dataclasses.fields(section)}
                )
                for name, section in _sections()
            }
        )


def _sections() -> Iterator[tuple[str, type[Any]]]:
    """(name, options class) of every section of :class:`RunSettings`."""
    hints = get_type_hints(RunSettings)
    for section in dataclasses.fields(RunSettings):
        yield section.name, hints[section.name]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of :class:`RunSettings`, with its environment default and help."""
    for _, section in _sections():
        for setting in dataclasses.fields(section):
            meta = setting.metadata
            env = meta["env"]
            if meta["switch"]:
                parser.add_argument(
                    meta["flag"],
                    dest=setting.name,
                    action="store_true",
                    default=os.environ.get(env) == "true",
                    help=f"{meta['text']} (env {env}=true)",
                )
                continue
            raw = os.environ.get(env)
            default = meta["parse"](raw) if raw else setting.default
            shown = "" if setting.default is None else f"; default {setting.default}"
            parser.add_argument(
                meta["flag"],
                dest=setting.name,
                type=meta["parse"],
                default=default,
                help=f"{meta['text']} (env {env}{shown})",
            )
