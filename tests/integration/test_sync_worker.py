"""Member access, discovery and the list/watch worker against a real kube-apiserver, storing
into MariaDB."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from functools import partial

import orjson
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from clusterpedia.kube.access import InvalidClusterConfig, access_from_kubeconfig, access_from_spec
from clusterpedia.kube.client import KubeClient, KubeError, ResourceExpired
from clusterpedia.kube.discovery import Discovery, discover
from clusterpedia.storage.query import Query, TypeFilter
from clusterpedia.storage.reader import ResourceReader
from clusterpedia.storage.writer import ResourceWriter
from clusterpedia.sync.targets import SyncResourcesError, resolve_sync_resources
from clusterpedia.sync.worker import ResourceSyncer, SyncSettings
from clusterpedia.testing.consistency import seed_configmaps
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.objects import configmaps_of, storage
from clusterpedia.testing.waiting import eventually_async

# Member access and the worker are the subject, not the storage (whose contract every database
# runs elsewhere).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.one_database("mysql")]
eventually = partial(eventually_async, timeout=20, interval=0.1)
FAST = SyncSettings(batch_interval=0.05, watch_timeout=(5, 8), backoff_initial=0.2)


@pytest.fixture(scope="module")
def member(member_clusters: list[APIServer]) -> APIServer:
    return member_clusters[1]


@pytest.fixture(scope="module")
def ns(member: APIServer, database_url: str) -> str:
    """A member namespace of this database's run (the member is shared by all three)."""
    name = "sync-" + database_url.split(":")[0].split("+")[0]
    member.kubectl("create", "namespace", name)
    return name


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stores(database_url: str) -> AsyncIterator[tuple[ResourceWriter, ResourceReader]]:
    async with storage(database_url) as pair:
        yield pair


@pytest_asyncio.fixture(loop_scope="module")
async def client(member: APIServer) -> AsyncIterator[KubeClient]:
    async with KubeClient(access_from_kubeconfig(member.kubeconfig.read_bytes())) as kube:
        yield kube


async def stored_names(reader: ResourceReader, cluster: str, namespace: str = ns) -> dict[str, str]:
    page = await reader.list(
        Query(
            types=(TypeFilter("", "v1", "configmaps"),),
            clusters=(cluster,),
            namespaces=(namespace,),
        )
    )
    out = {}
    for item in page.items:
        obj = orjson.loads(item.data)
        out[obj["metadata"]["name"]] = (obj.get("data") or {}).get("v", "")
    return out


async def test_discovery_resolves_names_wildcards_and_versions(client: KubeClient) -> None:
    discovery = await discover(client)
    targets, _ = resolve_sync_resources(
        discovery,
        [
            {"group": "", "resources": ["ConfigMap", "secrets"]},
            {"group": "apps", "resources": ["deployment"]},
        ],
    )
    assert sorted(str(t.rtype) for t in targets) == [
        "configmaps.v1",
        "deployments.v1.apps",
        "secrets.v1",
    ]
    everything_in_apps, _ = resolve_sync_resources(
        discovery, [{"group": "apps", "resources": ["*"]}]
    )
    assert {"deployments", "replicasets", "statefulsets", "daemonsets"} <= {
        t.rtype.resource for t in everything_in_apps
    }
    with pytest.raises(SyncResourcesError, match="no API group"):
        resolve_sync_resources(discovery, [{"group": "nope.example.com", "resources": ["*"]}])
    with pytest.raises(SyncResourcesError, match="no resource"):
        resolve_sync_resources(discovery, [{"group": "", "resources": ["pod-typo"]}])


async def test_an_aggregated_api_that_is_down_leaves_the_rest_of_discovery_usable(
    client: KubeClient, member: APIServer, ns: str
) -> None:
    """A registered APIService whose backend is missing answers 503 (the member still lists
    its group): that group/version is reported as failed, the rest resolves as before."""
    group = f"{ns}.metrics.example.io"
    service = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": f"v1beta1.{group}"},
        "spec": {
            "group": group,
            "version": "v1beta1",
            "groupPriorityMinimum": 100,
            "versionPriority": 10,
            "insecureSkipTLSVerify": True,
            "service": {"namespace": "default", "name": "nowhere", "port": 443},
        },
    }
    member.kubectl("apply", "-f", "-", input=json.dumps(service))
    try:
        discovery = await eventually(
            lambda: _with_group(client, group), what="the APIService's group listed"
        )
        assert (group, "v1beta1") in discovery.failed
        assert "503" in discovery.failed[(group, "v1beta1")]
        targets, warnings = resolve_sync_resources(
            discovery,
            [{"group": "", "resources": ["configmaps"]}, {"group": group, "resources": ["*"]}],
        )
        assert [str(t.rtype) for t in targets] == ["configmaps.v1"]
        assert warnings and warnings[0].startswith(f"discovery of {group}/v1beta1 failed")
    finally:
        member.kubectl("delete", "apiservice", f"v1beta1.{group}")


async def _with_group(client: KubeClient, group: str) -> Discovery | None:
    discovery = await discover(client)
    return discovery if group in discovery.groups else None


async def test_list_then_watch_follows_creates_updates_and_deletes(
    stores, client, member, ns
) -> None:  # type: ignore[no-untyped-def]
    writer, reader = stores
    for name in ("a", "b"):
        member.kubectl("create", "configmap", name, "-n", ns, "--from-literal=v=1")
    discovery = await discover(client)
    (target,), _ = resolve_sync_resources(discovery, [{"group": "", "resources": ["configmaps"]}])
    syncer = ResourceSyncer(
        cluster="m2", target=target, client=client, writer=writer, settings=FAST
    )
    task = asyncio.create_task(syncer.run())
    try:
        await eventually(lambda: _has(reader, "m2", ns, {"a": "1", "b": "1"}))
        member.kubectl("create", "configmap", "c", "-n", ns, "--from-literal=v=1")
        member.kubectl("patch", "configmap", "a", "-n", ns, "-p", json.dumps({"data": {"v": "2"}}))
        member.kubectl("delete", "configmap", "b", "-n", ns)
        await eventually(lambda: _has(reader, "m2", ns, {"a": "2", "c": "1"}))
        assert syncer.status.phase == "Syncing" and not syncer.status.initial_list_phase
        watched = REGISTRY.get_sample_value(
            "clusterpedia_sync_events_total",
            {"cluster": "m2", "resource": "configmaps.v1", "type": "WATCH"},
        )
        assert watched is not None and watched >= 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # While nobody watches, the member changes; a new worker converges from the seeded map.
    member.kubectl("delete", "configmap", "c", "-n", ns)
    member.kubectl("create", "configmap", "d", "-n", ns, "--from-literal=v=9")
    restarted = ResourceSyncer(
        cluster="m2", target=target, client=client, writer=writer, settings=FAST
    )
    rv = await restarted.relist()
    assert rv
    assert await stored_names(reader, "m2", ns) == {"a": "2", "d": "9"}
    stored = (
        await reader.list(Query(types=(TypeFilter("", "v1", "configmaps"),), names=("a",)))
    ).items[0]
    obj = orjson.loads(stored.data)
    assert obj["kind"] == "ConfigMap" and obj["apiVersion"] == "v1"
    assert "managedFields" not in obj["metadata"]
    assert obj["metadata"]["annotations"]["shadow.clusterpedia.io/cluster-name"] == "m2"


async def test_selectors_limit_what_is_synced(stores, client, member, ns) -> None:  # type: ignore[no-untyped-def]
    writer, reader = stores
    filtered = f"{ns}-filter"
    member.kubectl("create", "namespace", filtered)
    member.kubectl("create", "configmap", "keep", "-n", filtered)
    member.kubectl("label", "configmap", "keep", "-n", filtered, "sync=yes")
    member.kubectl("create", "configmap", "skip", "-n", filtered)
    discovery = await discover(client)
    (target,), _ = resolve_sync_resources(
        discovery,
        [
            {
                "group": "",
                "resources": ["configmaps"],
                "labelSelector": "sync=yes",
                "fieldSelector": f"metadata.namespace={filtered}",
            }
        ],
    )
    await ResourceSyncer(
        cluster="filtered", target=target, client=client, writer=writer, settings=FAST
    ).relist()
    page = await reader.list(
        Query(types=(TypeFilter("", "v1", "configmaps"),), clusters=("filtered",))
    )
    assert [orjson.loads(i.data)["metadata"]["name"] for i in page.items] == ["keep"]


async def test_a_namespace_field_selector_pages_through_every_object(  # type: ignore[no-untyped-def]
    stores, client, member, ns
) -> None:
    """More objects than a page, in a namespace that sorts before their names: a cluster-wide
    list with ``fieldSelector=metadata.namespace=X`` stops after its first page on
    kube-apiserver v1.35, so the worker lists the namespace's own path instead."""
    writer, reader = stores
    namespace = f"a-{ns}"  # "a-..." sorts before "cm-..."
    await seed_configmaps(member, namespace, 620)
    discovery = await discover(client)
    (target,), _ = resolve_sync_resources(discovery, [configmaps_of(namespace)])
    assert target.path == f"/api/v1/namespaces/{namespace}/configmaps"
    assert target.member_field_selector == ""
    syncer = ResourceSyncer(
        cluster="paged", target=target, client=client, writer=writer,
        settings=replace(FAST, page_size=100),
    )  # fmt: skip
    await syncer.relist()
    assert syncer.status.count == 620
    page = await reader.list(
        Query(types=(TypeFilter("", "v1", "configmaps"),), clusters=("paged",))
    )
    assert len(page.items) == 620


async def test_a_too_old_resource_version_is_expired(client: KubeClient) -> None:
    with pytest.raises(ResourceExpired):
        async for _ in client.watch("/api/v1/configmaps", resource_version="1", timeout_seconds=5):
            pass


async def test_bad_credentials_and_unreachable_servers_raise_kube_errors(member: APIServer) -> None:
    spec = {
        "apiserver": member.url,
        "tokenData": base64.b64encode(b"not-a-token").decode(),
        "syncResources": [],
    }
    async with KubeClient(access_from_spec(spec)) as bad:
        with pytest.raises(KubeError) as caught:
            await bad.get("/api")
        assert caught.value.status == 401
    unreachable = {"apiserver": "https://127.0.0.1:1", "tokenData": base64.b64encode(b"t").decode()}
    async with KubeClient(access_from_spec(unreachable)) as nowhere:
        with pytest.raises(KubeError, match="Connect"):
            await nowhere.get("/api")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "APIServer Endpoint is required"),
        ({"apiserver": "https://h"}, "Token or Cert is required"),
        ({"apiserver": "ftp://h", "tokenData": "dA=="}, "not an http"),
        ({"apiserver": "https://h", "tokenData": "%%%"}, "not valid base64"),
        ({"apiserver": "https://h", "certData": "dA=="}, "Token or Cert"),
        ({"kubeconfig": base64.b64encode(b"::: not yaml").decode()}, "kubeconfig"),
        (
            {"kubeconfig": base64.b64encode(b"apiVersion: v1\nclusters: []\n").decode()},
            "no context",
        ),
    ],
)
async def test_malformed_specs_say_what_is_wrong(spec, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidClusterConfig, match=message):
        access_from_spec(spec)


async def _has(
    reader: ResourceReader, cluster: str, namespace: str, expected: dict[str, str]
) -> bool:
    return await stored_names(reader, cluster, namespace) == expected


async def test_a_compacted_resource_version_relists_and_loses_nothing(  # type: ignore[no-untyped-def]
    stores, control_plane, database_url
) -> None:
    writer, reader = stores
    member = control_plane.add_apiserver("compact-" + database_url.split(":")[0].split("+")[0])
    try:
        member.kubectl("create", "namespace", "c")
        for item in ("keep", "gone"):
            member.kubectl("create", "configmap", item, "-n", "c", "--from-literal=v=1")
        async with KubeClient(access_from_kubeconfig(member.kubeconfig.read_bytes())) as kube:
            (target,), _ = resolve_sync_resources(
                await discover(kube), [{"group": "", "resources": ["configmaps"]}]
            )
            syncer = ResourceSyncer(
                cluster=member.name, target=target, client=kube, writer=writer, settings=FAST
            )
            listed_at = await syncer.relist()
            # Changes after that resourceVersion, then history compacted and the API server
            # restarted (its watch cache goes): resuming at the old version must answer 410.
            member.kubectl("delete", "configmap", "gone", "-n", "c")
            member.kubectl("create", "configmap", "new", "-n", "c", "--from-literal=v=2")
            control_plane.etcd.compact()
            member.stop()
            member.start()
            task = asyncio.create_task(syncer.run(resource_version=listed_at))
            try:
                await eventually(lambda: _has(reader, member.name, "c", {"keep": "1", "new": "2"}))
                assert syncer.status.watch_restarts >= 1
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        member.stop()


async def _rename_resources(writer: ResourceWriter, source: str, target: str) -> None:
    statement = (
        f"RENAME TABLE {source} TO {target}"
        if writer.dialect.name == "mysql"
        else f"ALTER TABLE {source} RENAME TO {target}"
    )
    async with writer.engine.begin() as connection:
        await connection.exec_driver_sql(statement)


async def test_a_failing_database_pauses_the_worker_and_a_relist_loses_nothing(  # type: ignore[no-untyped-def]
    stores, client, member, database_url
) -> None:
    """A real failure: the table disappears under the worker (non-transient errors on every
    write), the member changes meanwhile, the table comes back."""
    writer, reader = stores
    namespace = "dbfail-" + database_url.split(":")[0].split("+")[0]
    member.kubectl("create", "namespace", namespace)
    member.kubectl("create", "configmap", "keep", "-n", namespace, "--from-literal=v=1")
    (target,), _ = resolve_sync_resources(
        await discover(client),
        [
            {
                "group": "",
                "resources": ["configmaps"],
                "fieldSelector": f"metadata.namespace={namespace}",
            }
        ],
    )
    syncer = ResourceSyncer(
        cluster="dbfail", target=target, client=client, writer=writer, settings=FAST
    )
    task = asyncio.create_task(syncer.run())
    try:
        await eventually(lambda: _has(reader, "dbfail", namespace, {"keep": "1"}))
        await _rename_resources(writer, "resources", "resources_away")
        try:
            member.kubectl("create", "configmap", "during", "-n", namespace, "--from-literal=v=1")
            member.kubectl(
                "patch", "configmap", "keep", "-n", namespace, "-p", '{"data":{"v":"2"}}'
            )

            async def paused() -> bool:
                return syncer.status.reason == "StorageExpection"  # the original's spelling

            await eventually(paused)
            assert not task.done()
        finally:
            await _rename_resources(writer, "resources_away", "resources")
        await eventually(lambda: _has(reader, "dbfail", namespace, {"keep": "2", "during": "1"}))
        await eventually(lambda: _is(syncer.status.phase, "Syncing"))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _is(value: object, expected: object) -> bool:
    return value == expected


async def test_secret_values_are_not_stored_unless_asked(
    client: KubeClient, stores: tuple[ResourceWriter, ResourceReader], member: APIServer, ns: str
) -> None:
    writer, reader = stores
    member.kubectl(
        "create", "secret", "generic", "creds", "-n", ns, "--from-literal=password=hunter2"
    )
    discovery = await discover(client)
    (target,), _ = resolve_sync_resources(discovery, [{"group": "", "resources": ["secrets"]}])
    query = Query(types=(TypeFilter("", "v1", "secrets"),), names=("creds",), namespaces=(ns,))
    for cluster, settings, kept in (
        ("secrets-default", FAST, False),
        ("secrets-kept", replace(FAST, store_secret_data=True), True),
    ):
        syncer = ResourceSyncer(
            cluster=cluster, target=target, client=client, writer=writer, settings=settings
        )
        await syncer.relist()
        (item,) = (await reader.list(replace(query, clusters=(cluster,)))).items
        assert (base64.b64encode(b"hunter2") in item.data) is kept
        secret = orjson.loads(item.data)
        annotations = secret["metadata"]["annotations"]
        assert ("data" in secret) is kept
        assert (annotations.get("shadow.clusterpedia.io/data-omitted") == "true") is not kept
        assert secret["type"] == "Opaque"  # everything else is kept
        await writer.delete_cluster(cluster)
