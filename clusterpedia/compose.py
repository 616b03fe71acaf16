"""The composition root of ``clusterpedia run``: the API server and the operator built from one
:class:`~clusterpedia.settings.RunSettings`, started, stopped together.

The only module that knows every part; each part gets its own section of the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import ssl
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

from clusterpedia import memory, process
from clusterpedia.apiserver.members import IdentityMapping
from clusterpedia.apiserver.reach import ReachPolicy, parse_allowed_subresources
from clusterpedia.apiserver.server import ClusterpediaServer, ServerConfig
from clusterpedia.apiserver.watch import WatchSettings
from clusterpedia.features import parse_feature_gates
from clusterpedia.kube.access import InvalidClusterConfig
from clusterpedia.kube.client import KubeError
from clusterpedia.settings import ReachOptions, RunSettings
from clusterpedia.storage import SchemaTooNew, StorageError, StorageTarget
from clusterpedia.watch.retention import Retention

if TYPE_CHECKING:
    from clusterpedia.operator.runtime import OperatorConfig

logger = logging.getLogger(__name__)


def reach_policy(options: ReachOptions) -> ReachPolicy:
    """What may reach members; raises ValueError on a malformed --allowed-proxy-subresources."""
    return ReachPolicy(
        subresources=parse_allowed_subresources(options.allowed_proxy_subresources),
        forward_unsynced=options.allow_forward_unsync_resource_request,
        proxy_path=options.enable_proxy_path_for_forward_request,
    )


def server_config(settings: RunSettings, storage: StorageTarget) -> ServerConfig:
    serving, watch = settings.serving, settings.watch
    gates = parse_feature_gates(settings.process.feature_gates)
    return ServerConfig(
        storage_url=storage.url,
        storage_options=storage.database_options(),
        read_storage_url=storage.read.url if storage.read else None,
        read_storage_options=storage.read.database_options() if storage.read else {},
        read_storage_max_lag=settings.storage.read_storage_max_lag,
        kubeconfig=settings.host.kubeconfig,
        bind_address=serving.bind_address,
        port=serving.secure_port,
        cert_file=serving.tls_cert_file,
        key_file=serving.tls_private_key_file,
        cert_dir=serving.cert_dir,
        check_clusters=serving.authorize_clusters,
        reach=reach_policy(settings.reach),
        reach_as_pediacluster=settings.reach.allow_pediacluster_config_for_proxy_request,
        reach_response_timeout=settings.reach.member_response_timeout,
        reach_identity=IdentityMapping(
            user_prefix=settings.reach.impersonate_user_prefix,
            group_prefix=settings.reach.impersonate_group_prefix,
        ),
        allow_where_sql=serving.allow_where_sql or gates.allow_where_sql,
        watch=WatchSettings(
            capacity=watch.watch_queue_size, bookmark_interval=watch.watch_bookmark_interval
        ),
        watch_poll_interval=watch.watch_poll_interval,
        max_requests_inflight=serving.max_requests_inflight,
        max_watches=serving.max_watches,
        request_timeout=serving.request_timeout,
        idle_connection_timeout=serving.idle_connection_timeout,
        retention=Retention(
            max_age=timedelta(seconds=watch.change_log_max_age)
            if watch.change_log_max_age > 0
            else None,
            max_events=watch.change_log_max_events or None,
        ),
    )


def operator_config(settings: RunSettings, storage: StorageTarget) -> OperatorConfig:
    # Imported here only: Kopf and the kubernetes client it loads hold 50 MB that a server
    # run with --no-operator has no use for.
    from clusterpedia.operator.runtime import OperatorConfig
    from clusterpedia.sync.cluster_synchro import ClusterSettings
    from clusterpedia.sync.worker import SyncSettings

    sync = settings.sync
    return OperatorConfig(
        storage_url=storage.url,
        storage_options=storage.database_options(),
        kubeconfig=settings.host.kubeconfig,
        sync=SyncSettings(
            store_secret_data=sync.store_secret_data,
            max_object_bytes=sync.max_object_bytes,
            page_size=sync.page_size,
            kube_api_qps=sync.kube_api_qps,
            kube_api_burst=sync.kube_api_burst,
            list_concurrency=sync.member_list_concurrency,
            process_list_concurrency=sync.max_concurrent_lists,
        ),
        allow_http_credentials=sync.allow_http_credentials,
        sharding_name=settings.operator.sharding_name,
        sharding=settings.operator.sharding,
        sharding_lease_duration=settings.operator.sharding_lease_duration,
        cluster=ClusterSettings(
            ignore_sync_lease=parse_feature_gates(settings.process.feature_gates).ignore_sync_lease
        ),
    )


def cannot_start(error: BaseException, settings: RunSettings, storage: StorageTarget) -> int:
    """Say in one line why the process cannot start and what to change; the traceback only
    with ``--log-level debug``. Returns the exit code."""
    logger.debug("start-up failed", exc_info=error)
    problem = " ".join(startup_problem(error, settings, storage).split())  # one line
    print(f"clusterpedia: cannot start: {problem}", file=sys.stderr)
    return 1


def startup_problem(error: BaseException, settings: RunSettings, storage: StorageTarget) -> str:
    """The cause of a failed start, and the setting that decides it."""
    serving = settings.serving
    if isinstance(error, InvalidClusterConfig):
        return f"the host cluster: {error} (--kubeconfig, KUBECONFIG, or in-cluster)"
    if isinstance(error, KubeError):
        return f"the host cluster does not answer: {error} (--kubeconfig, KUBECONFIG)"
    if isinstance(error, StorageError | SchemaTooNew):
        return f"the storage ({storage.describe()}): {error} (--storage-url, --storage-config)"
    if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        return (
            f"{serving.bind_address}:{serving.secure_port} is in use: choose another "
            "--secure-port or --bind-address, or stop what listens there"
        )
    if isinstance(error, OSError | ssl.SSLError) and serving.tls_cert_file:
        reason = getattr(error, "strerror", None) or str(error)
        return (
            f"the serving certificate ({serving.tls_cert_file}, {serving.tls_private_key_file}): "
            f"{reason} (--tls-cert-file, --tls-private-key-file: a readable PEM certificate "
            "and its own key)"
        )
    return f"{type(error).__name__}: {error} (run with --log-level debug for the traceback)"


async def _print_clusters(server: ClusterpediaServer) -> None:
    """Say which PediaClusters the host has (a start-up line, never fatal)."""
    try:
        found = await server.host.get("/apis/cluster.clusterpedia.io/v1alpha2/pediaclusters")
    except KubeError as error:
        print(f"clusterpedia: cannot list PediaClusters: {error}", file=sys.stderr, flush=True)
        return
    names = sorted(item["metadata"]["name"] for item in found.get("items") or [])
    listed = ", ".join(names) if names else "none yet"
    print(f"clusterpedia: {len(names)} PediaClusters: {listed}", file=sys.stderr, flush=True)


def peering_name(settings: RunSettings) -> str:
    """The replicas of one shard peer among themselves: a shard's default peering object is
    its own, or one shard's active replica would pause every other shard."""
    options = settings.operator
    if options.sharding_name and options.peering_name == "clusterpedia":
        return f"clusterpedia-{options.sharding_name}"
    return options.peering_name


async def serve(settings: RunSettings, storage: StorageTarget) -> int:
    """Run the API server and (unless ``--no-operator``) the operator until SIGTERM/SIGINT;
    non-zero if either failed."""
    process.limit_tls_read_buffers()  # before the listener accepts a connection
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        server = ClusterpediaServer(server_config(settings, storage))
    except InvalidClusterConfig as error:
        return cannot_start(error, settings, storage)
    try:
        await server.start()
    except Exception as error:
        await server.stop()
        return cannot_start(error, settings, storage)
    bind = settings.serving.bind_address
    print(f"clusterpedia: serving https://{bind}:{server.port}", file=sys.stderr)
    await _print_clusters(server)
    operator = None
    if not settings.operator.no_operator:
        from clusterpedia.operator.runner import OperatorThread

        operator = OperatorThread(
            operator_config(settings, storage),
            standalone=not settings.operator.peering,
            priority=settings.operator.priority,
            peering_name=peering_name(settings),
        )
        try:
            await loop.run_in_executor(None, operator.start)
        except RuntimeError as error:
            print(f"clusterpedia: {error}", file=sys.stderr)
            await server.stop()
            return 1
    process.tune_garbage_collector()
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
    process.exit_by_deadline(settings.process.shutdown_grace_period)
    if operator is not None:
        await loop.run_in_executor(None, operator.stop)
    await server.stop()
    return code
