"""Watch end to end on PostgreSQL: an informer (the official Python client: list, then watch
from the list's resourceVersion, resuming from the last one seen) follows two real members
while they churn, across a restart of the syncing process, a restart of the serving one, and
resumes that alternate between the two replicas. It must end in the members' state and have
seen every logged change exactly once, in order.

kubectl -w through the host is in test_product.py (every database); cuts by the host's request
timeout are in tests/integration/test_watch_api.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import kubernetes
import orjson
import yaml

from clusterpedia.apiserver.testing import PREFIX
from clusterpedia.storage.changelog import ChangeLog
from clusterpedia.storage.engine import create_engine
from clusterpedia.testing.consistency import ConfigMapChurn, member_state
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.databases import fresh_database, require_server
from clusterpedia.testing.informer import MEMBER_RV_ANNOTATION, Informer, object_key
from clusterpedia.testing.objects import configmaps_of, pediacluster
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually

NAMESPACE = "informer"
CLUSTERS = ("inf-1", "inf-2")


def served_api(process: ProductProcess, host: APIServer) -> Any:
    """The official client talking to one replica directly, as the host's aggregation layer
    does: the front-proxy client certificate and X-Remote-* headers."""
    proxy = host.pki.front_proxy_client
    assert proxy is not None
    configuration = kubernetes.client.Configuration()
    configuration.host = process.url + PREFIX
    configuration.ssl_ca_cert = str(process.cert_dir / "ca.crt")
    configuration.cert_file, configuration.key_file = str(proxy.cert), str(proxy.key)
    client = kubernetes.client.ApiClient(configuration)
    client.set_default_header("X-Remote-User", "informer")
    client.set_default_header("X-Remote-Group", "system:masters")
    return kubernetes.client.CoreV1Api(client)


def members_state(members: list[APIServer]) -> dict[tuple[str, str], int]:
    """(cluster, name) -> member resourceVersion of every ConfigMap in the members."""
    return {
        (cluster, name): rv
        for cluster, member in zip(CLUSTERS, members, strict=True)
        for name, rv in member_state(member, NAMESPACE).items()
    }


def served_state(process: ProductProcess, host: APIServer) -> dict[tuple[str, str], int] | None:
    """What one replica serves; None while it cannot (not synced yet, restarting)."""
    try:
        body = orjson.loads(
            process.get_as_front_proxy(host, f"{PREFIX}/api/v1/namespaces/{NAMESPACE}/configmaps")
        )
    except OSError:  # urllib's HTTPError (404 before the type is synced) is one
        return None
    return {
        object_key(i["metadata"]): int(i["metadata"]["annotations"][MEMBER_RV_ANNOTATION])
        for i in body["items"]
    }


async def _logged(url: str, after: int) -> tuple[int, list[int]]:
    engine = create_engine(url)
    try:
        log = ChangeLog(engine)
        head = (await log.marks()).head
        events = await log.read(after=after, upto=head, limit=10**6, resource="configmaps")
        return head, [e.rv for e in events if e.namespace == NAMESPACE]
    finally:
        await engine.dispose()


def seen_after(informer: Informer, events: int) -> None:
    """Wait until ``informer`` has seen ``events`` more events than now."""
    target = len(informer.seen) + events
    eventually(lambda: len(informer.seen) >= target, timeout=60, what=f"{events} more events")


def changed_after(churn: ConfigMapChurn, changes: int) -> None:
    """Wait until the members made ``changes`` more changes than now."""
    target = churn.changes + changes
    eventually(lambda: churn.changes >= target, timeout=60, what=f"{changes} more changes")


def test_an_informer_sees_every_change_once_across_restarts_and_replicas(
    host: APIServer, member_clusters: list[APIServer], tmp_path: Path
) -> None:
    require_server("postgresql")
    members = member_clusters
    for member in members:
        member.kubectl("create", "namespace", NAMESPACE, check=False)
    with fresh_database("postgresql", label="watch-e2e") as url:
        syncer = ProductProcess(
            workdir=tmp_path / "syncer", kubeconfig=host.kubeconfig, storage_url=url, name="syncer"
        ).start()
        server = ProductProcess(
            workdir=tmp_path / "server",
            kubeconfig=host.kubeconfig,
            storage_url=url,
            extra_args=("--no-operator",),
            name="server",
        ).start()
        clusters = [
            pediacluster(name, member.kubeconfig.read_bytes(), configmaps_of(NAMESPACE))
            for name, member in zip(CLUSTERS, members, strict=True)
        ]
        try:
            host.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(clusters))
            eventually(
                lambda: served_state(server, host) == members_state(members),
                timeout=60,
                what="the members' ConfigMaps are served",
            )
            with ConfigMapChurn(members, NAMESPACE, names=15, rate=15) as churn:
                informer = Informer(
                    [served_api(server, host), served_api(syncer, host)],
                    method="list_namespaced_config_map",
                    namespace=NAMESPACE,
                    timeout_seconds=2,  # each resume goes to the other replica
                )
                # Each step waits for the churn (or the informer) to move on, not for a time.
                seen_after(informer, 40)  # the informer follows live changes
                syncer.stop()  # sync stops; members keep changing
                changed_after(churn, 45)
                syncer.start()  # relists: what changed meanwhile becomes events
                seen_after(informer, 30)
                server.stop()  # its watch breaks mid-stream
                changed_after(churn, 30)
                server.start()
                seen_after(informer, 40)
            eventually(
                lambda: served_state(server, host) == members_state(members),
                timeout=60,
                what="the database converges to the members",
            )
            head, logged = asyncio.run(_logged(url, informer.start))
            informer.finish(head)
            assert churn.changes > 100
            assert informer.errors == []
            assert informer.rounds >= 4, "resumed several times, on both replicas"
            assert informer.state == members_state(members)
            assert informer.seen == logged, "every logged change, once each, in order"
            print(
                f"informer: {churn.changes} member changes, {len(informer.seen)} events, "
                f"{informer.rounds} watch requests, {informer.breaks} broken streams"
            )  # shown in the closing note
        finally:
            host.kubectl("delete", "pediaclusters", *CLUSTERS, "--timeout=60s", check=False)
            syncer.stop()
            server.stop()
