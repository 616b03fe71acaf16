"""Run the API server: storage, host clients, TLS, the listener, the auth settings reloader."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.kube.host import host_access
from clusterpedia.storage import Database
from clusterpedia.watch.feed import ChangeFeed
from clusterpedia.watch.retention import Retention, prune_periodically

from .admission import Admission
from .app import build_app, build_layers
from .authn import Authenticator, load_config
from .authz import Authorizer
from .deadline import RequestDeadline
from .members import (
    RESPONSE_SECONDS,
    Identity,
    IdentityMapping,
    MemberDirectory,
)
from .protocol import StatusAppRunner
from .reach import ReachPolicy, ReachServer
from .replica import LagMonitor
from .tls import ServingCertificate, ServingTLS, self_signed
from .watch import WatchServer, WatchSettings

logger = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    """What the API server needs from the command line."""

    storage_url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)  # Database keywords
    # A streaming replica of the storage: list, get and watch read there (replica.py).
    read_storage_url: str | None = None
    read_storage_options: Mapping[str, Any] = field(default_factory=dict)
    read_storage_max_lag: float = 30.0  # seconds behind before /readyz fails
    kubeconfig: str | None = None
    # Where the Secrets of PediaClusters' authenticationFrom live (reach-through reads them).
    namespace: str = field(
        default_factory=lambda: os.environ.get("CLUSTERPEDIA_NAMESPACE", "clusterpedia-system")
    )
    bind_address: str = "0.0.0.0"
    port: int = 8443
    cert_file: str | None = None
    key_file: str | None = None
    cert_dir: str | None = None  # where a generated certificate goes
    hosts: list[str] = field(
        default_factory=lambda: [
            "localhost",
            "127.0.0.1",
            "clusterpedia-apiserver.clusterpedia-system.svc",
        ]
    )
    check_clusters: bool = False
    reach: ReachPolicy = field(default_factory=ReachPolicy)  # what may reach members
    reach_as_pediacluster: bool = False  # act there as the PediaCluster, not as the user
    reach_identity: IdentityMapping = field(default_factory=IdentityMapping)  # who, on members
    reach_response_timeout: float = RESPONSE_SECONDS  # for a member's answer to begin
    allow_where_sql: bool = False
    auth_reload_seconds: float = 30.0
    watch: WatchSettings = field(default_factory=WatchSettings)
    # How often the change feed reads the log when no NOTIFY wakes it (PostgreSQL has NOTIFY
    # and polls only as a fallback, at 10x this interval).
    watch_poll_interval: float = 0.2
    retention: Retention = field(default_factory=Retention)
    max_requests_inflight: int = 400  # beyond it: 429 with Retry-After (admission.py)
    max_watches: int = 2000
    request_timeout: float = 60.0  # non-watch requests, answer sent included (deadline.py)
    # A connection must send a complete request within this long of opening or of its last
    # answer, or it is closed (slow headers included, which aiohttp checks with this timer).
    idle_connection_timeout: float = 90.0


class ClusterpediaServer:
    """The aiohttp server with everything it needs; ``start``/``stop`` on one event loop."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.storage = Database(
            config.storage_url,
            allow_where_sql=config.allow_where_sql,
            **config.storage_options,
        )
        # Reads go to the replica when there is one; migrations and pruning to the primary.
        self.reads = self.storage
        self.lag: LagMonitor | None = None
        if config.read_storage_url:
            self.reads = Database(
                config.read_storage_url,
                allow_where_sql=config.allow_where_sql,
                replica=True,
                **config.read_storage_options,
            )
            self.lag = LagMonitor(
                primary=self.storage.changes,
                replica=self.reads.changes,
                max_lag=config.read_storage_max_lag,
            )
        self.host = KubeClient(host_access(config.kubeconfig))
        self.members = MemberDirectory(
            self.host, config.namespace, response_timeout=config.reach_response_timeout
        )
        self.certificate: ServingCertificate | None = None
        self.tls: ServingTLS | None = None
        self.authenticator: Authenticator | None = None
        self._runner: web.AppRunner | None = None
        self._reloader: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self.port = config.port
        changes = self.reads.changes
        self.feed = ChangeFeed(
            changes,
            poll_interval=config.watch_poll_interval * (10 if changes.pushes else 1),
            listen=changes.pushes,
        )

    def _certificate(self) -> ServingCertificate:
        if self.config.cert_file and self.config.key_file:
            return ServingCertificate(Path(self.config.cert_file), Path(self.config.key_file))
        directory = Path(self.config.cert_dir or tempfile.mkdtemp(prefix="clusterpedia-certs-"))
        logger.warning(
            "no --tls-cert-file given: serving with a generated self-signed certificate (CA in %s)",
            directory / "ca.crt",
        )
        return self_signed(directory, self.config.hosts)

    async def start(self) -> None:
        await self.storage.migrate()
        auth_config = await load_config(self.host)
        if not auth_config.client_ca:
            logger.warning(
                "the host has no front-proxy CA (requestheader-client-ca-file): requests through "
                "the aggregation layer cannot be authenticated; bearer tokens still work"
            )
        self.certificate = self._certificate()
        self.tls = ServingTLS(self.certificate, client_ca=auth_config.client_ca)
        self.authenticator = Authenticator(host=self.host, config=auth_config)
        await self.feed.start()
        if self.lag is not None:
            await self.lag.measure()
            self.lag.start()
        self._pruner = asyncio.create_task(
            prune_periodically(self.storage.changes, self.config.retention),
            name="change log pruner",
        )
        identity = Identity(
            as_pediacluster=self.config.reach_as_pediacluster, mapping=self.config.reach_identity
        )
        identity.warn()
        layers = build_layers(
            reader=self.reads.objects,
            catalog=self.reads.catalog,
            authenticator=self.authenticator,
            authorizer=Authorizer(host=self.host),
            check_clusters=self.config.check_clusters,
            ready=self.ready,
            watch=WatchServer(self.feed, self.config.watch),
            admission=Admission(
                max_inflight=self.config.max_requests_inflight,
                max_watches=self.config.max_watches,
            ),
            deadline=RequestDeadline(self.config.request_timeout),
            reach=ReachServer(
                self.members,
                catalog=self.reads.catalog,
                policy=self.config.reach,
                identity=identity,
            ),
        )
        # A client that goes away cancels its handler: a watch with no events to write would
        # otherwise keep its subscription until its timeout (up to an hour).
        self._runner = StatusAppRunner(
            build_app(layers),
            access_log=None,
            shutdown_timeout=5,
            handler_cancellation=True,
            keepalive_timeout=self.config.idle_connection_timeout,
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.config.bind_address,
            self.config.port,
            ssl_context=self.tls.context,
        )
        await site.start()
        if self.config.port == 0:
            server = site._server  # the chosen port, when asked for any
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._reloader = asyncio.create_task(self._reload_auth(), name="auth settings reloader")
        logger.info("API server listening on https://%s:%d", self.config.bind_address, self.port)

    async def ready(self) -> None:
        """Raises when this server should leave the Service: the storage it reads from does
        not answer, or (a replica) lags too far behind."""
        await self.reads.ping()
        if self.lag is not None and (problem := self.lag.problem()):
            raise RuntimeError(problem)

    async def _reload_auth(self) -> None:
        """Follow rotations of the front-proxy CA and its allowed names."""
        while True:
            await asyncio.sleep(self.config.auth_reload_seconds)
            try:
                config = await load_config(self.host)
            except KubeError as error:
                logger.warning("could not re-read extension-apiserver-authentication: %s", error)
                continue
            assert self.tls is not None and self.authenticator is not None
            self.tls.trust(config.client_ca)
            self.authenticator.update(config)

    async def stop(self) -> None:
        for task in (self._reloader, self._pruner):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.lag is not None:
            await self.lag.stop()
        await self.feed.stop()  # watch streams end now, not at the runner's shutdown timeout
        if self._runner is not None:
            await self._runner.cleanup()
        await self.members.close()
        await self.host.close()
        if self.reads is not self.storage:
            await self.reads.close()
        await self.storage.close()
