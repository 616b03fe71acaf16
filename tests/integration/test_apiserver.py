"""The API server against a real host kube-apiserver (front proxy on), real kubectl through the
aggregation layer and directly, the official Python client, and every database.

The database is seeded through the storage writer (the sync path has its own tests, and the
operator end to end is in test_apiserver_e2e.py), so each assertion knows exactly what is stored.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from clusterpedia.apiserver.testing import (
    PREFIX,
    ServerThread,
    parse,
    register_apiservice,
    start_server,
)
from clusterpedia.certs import issue_serving_certificate
from clusterpedia.gvr import ResourceType
from clusterpedia.storage.catalog import PrinterColumn, SyncedType, TypeCatalog
from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.migrate import ensure_schema
from clusterpedia.storage.writer import ResourceWriter
from clusterpedia.testing.aggregation import (
    READER_ROLE,
    allow_only_cluster,
    service_account_token,
)
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.objects import DEPLOYMENTS, PODS, make_object, upsert

WIDGETS = ResourceType("example.io", "v1", "widgets", "Widget")
NAMESPACES = ResourceType("", "v1", "namespaces", "Namespace")


def _types(cluster: str) -> list[SyncedType]:
    """Both clusters sync pods, namespaces and deployments; only c2 has the Widget CRD."""
    types = [
        SyncedType(cluster, "", "v1", "pods", "Pod", True, "pod", ("po",), ("all",)),
        SyncedType(cluster, "", "v1", "namespaces", "Namespace", False, "namespace", ("ns",)),
        SyncedType(
            cluster, "apps", "v1", "deployments", "Deployment", True, "deployment", ("deploy",)
        ),
    ]
    if cluster == "c2":
        types.append(
            SyncedType(
                cluster,
                "example.io",
                "v1",
                "widgets",
                "Widget",
                True,
                "widget",
                ("wd",),
                printer_columns=(
                    PrinterColumn("Size", "integer", ".spec.size"),
                    PrinterColumn("Phase", "string", ".status.phase"),
                ),
            )
        )
    return types


def _pod(cluster: str, namespace: str, name: str, **labels: str) -> dict[str, Any]:
    return make_object(
        PODS,
        name=name,
        namespace=namespace,
        cluster=cluster,
        labels=labels or None,
        spec={"containers": [{"name": "app", "image": "nginx"}], "nodeName": "node-1"},
        status={
            "phase": "Running",
            "podIP": "10.0.0.1",
            "containerStatuses": [
                {
                    "name": "app",
                    "image": "nginx",
                    "imageID": "docker.io/library/nginx@sha256:0",
                    "ready": True,
                    "restartCount": 2,
                    "state": {"running": {}},
                }
            ],
        },
    )


async def _seed(url: str) -> None:
    engine = create_engine(url)
    try:
        await ensure_schema(engine)
        writer, catalog = ResourceWriter(engine), TypeCatalog(engine)
        await catalog.set_health("c1", healthy=True, reason="")
        await catalog.set_health("c2", healthy=False, reason="/readyz answered 500")
        for cluster in ("c1", "c2"):
            await catalog.replace(cluster, _types(cluster))
            pods = [_pod(cluster, "team-a", f"web-{i}", app="web") for i in range(3)]
            pods += [_pod(cluster, "team-b", f"db-{i}", app="db") for i in range(2)]
            await writer.apply(cluster=cluster, rtype=PODS, changes=[upsert(p) for p in pods])
            namespaces = [
                make_object(
                    NAMESPACES, name=n, namespace="", cluster=cluster, status={"phase": "Active"}
                )
                for n in ("team-a", "team-b")
            ]
            await writer.apply(
                cluster=cluster, rtype=NAMESPACES, changes=[upsert(n) for n in namespaces]
            )
        deployment = make_object(
            DEPLOYMENTS,
            name="web",
            namespace="team-a",
            cluster="c1",
            spec={
                "replicas": 3,
                "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}},
            },
            status={"readyReplicas": 3, "updatedReplicas": 3, "availableReplicas": 3},
        )
        await writer.apply(cluster="c1", rtype=DEPLOYMENTS, changes=[upsert(deployment)])
        widget = make_object(
            WIDGETS,
            name="w1",
            namespace="team-a",
            cluster="c2",
            spec={"size": 7},
            status={"phase": "Shiny"},
        )
        await writer.apply(cluster="c2", rtype=WIDGETS, changes=[upsert(widget)])
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def host(aggregator: APIServer) -> APIServer:
    return aggregator


@pytest.fixture(scope="module")
def server(
    host: APIServer, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    asyncio.run(_seed(database_url))
    thread = start_server(host, database_url, cert_dir=str(tmp_path_factory.mktemp("certs")))
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def registered(host: APIServer, server: ServerThread) -> APIServer:
    register_apiservice(host, port=server.port, ca_pem=server.ca_pem)
    return host


def kubectl(host: APIServer, *args: str, cluster: str | None = None, check: bool = True) -> Any:
    """kubectl through the host's aggregation layer, with the server URL the original's
    gen-clusterconfigs writes."""
    path = PREFIX if cluster is None else f"{PREFIX}/clusters/{cluster}"
    return host.kubectl(f"--server={host.url}{path}", *args, check=check)


# -- through the aggregation layer -----------------------------------------------------------


def test_apiservice_becomes_available(registered: APIServer) -> None:
    service = json.loads(
        registered.kubectl("get", "apiservice", "v1beta1.clusterpedia.io", "-o", "json").stdout
    )
    available = {c["type"]: c for c in service["status"]["conditions"]}["Available"]
    assert available["status"] == "True", available


def test_kubectl_get_pods_all_namespaces_shows_cluster_column(registered: APIServer) -> None:
    output = kubectl(registered, "get", "pods", "-A").stdout
    lines = output.splitlines()
    assert lines[0].split()[:3] == ["NAMESPACE", "CLUSTER", "NAME"], output
    assert lines[0].split()[3:6] == ["READY", "STATUS", "RESTARTS"], output
    rows = {tuple(line.split()[:3]) for line in lines[1:]}
    assert ("team-a", "c1", "web-0") in rows and ("team-b", "c2", "db-1") in rows
    assert len(rows) == 10


def test_kubectl_get_one_object_needs_the_cluster(registered: APIServer) -> None:
    found = yaml.safe_load(
        kubectl(
            registered, "get", "deploy", "-n", "team-a", "web", "-o", "yaml", cluster="c1"
        ).stdout
    )
    assert found["kind"] == "Deployment" and found["metadata"]["name"] == "web"
    assert found["metadata"]["annotations"]["shadow.clusterpedia.io/cluster-name"] == "c1"
    refused = kubectl(registered, "get", "deploy", "-n", "team-a", "web", check=False)
    assert refused.returncode != 0
    assert "please specify the cluster name" in refused.stderr


def test_kubectl_api_resources_lists_synced_types(registered: APIServer) -> None:
    output = kubectl(registered, "api-resources").stdout
    rows = {line.split()[0]: line.split() for line in output.splitlines()[1:]}
    assert rows["pods"][1] == "po" and rows["deployments"][1] == "deploy"
    assert rows["widgets"][1:3] == ["wd", "example.io/v1"]


def test_kubectl_get_raw_discovery_keeps_the_prefix(registered: APIServer) -> None:
    groups = json.loads(kubectl(registered, "get", "--raw", "/apis").stdout)
    assert groups["kind"] == "APIGroupList"
    assert {g["name"] for g in groups["groups"]} == {"apps", "example.io"}
    core = json.loads(kubectl(registered, "get", "--raw", "/api/v1", cluster="c2").stdout)
    assert {r["name"] for r in core["resources"]} == {"pods", "namespaces"}
    assert all(r["verbs"] == ["get", "list", "watch"] for r in core["resources"])


def _rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines()[1:]]


def test_kubectl_search_labels_and_field_selectors(registered: APIServer) -> None:
    only_c2 = _rows(
        kubectl(registered, "get", "pods", "-A", "-l", "search.clusterpedia.io/clusters=c2").stdout
    )
    assert {row[1] for row in only_c2} == {"c2"} and len(only_c2) == 5
    databases = _rows(kubectl(registered, "get", "pods", "-A", "-l", "app=db").stdout)
    assert sorted((row[1], row[2]) for row in databases) == [
        ("c1", "db-0"), ("c1", "db-1"), ("c2", "db-0"), ("c2", "db-1"),
    ]  # fmt: skip
    team_b = _rows(
        kubectl(
            registered, "get", "pods", "-A", "--field-selector", "metadata.namespace=team-b"
        ).stdout
    )
    assert {row[0] for row in team_b} == {"team-b"} and len(team_b) == 4


def test_kubectl_chunked_paging_fetches_everything(registered: APIServer) -> None:
    rows = _rows(kubectl(registered, "get", "pods", "-A", "--chunk-size=3").stdout)
    assert len(rows) == 10 and len({(r[1], r[0], r[2]) for r in rows}) == 10


def test_kubectl_shows_custom_resource_printer_columns(registered: APIServer) -> None:
    output = kubectl(registered, "get", "widgets", "-A").stdout
    header, *rows = output.splitlines()
    assert header.split() == ["NAMESPACE", "CLUSTER", "NAME", "SIZE", "PHASE"]
    assert rows[0].split() == ["team-a", "c2", "w1", "7", "Shiny"]


def test_kubectl_reports_an_unsynced_type(registered: APIServer) -> None:
    result = kubectl(registered, "get", "secrets", "-A", check=False)
    assert result.returncode != 0
    assert "doesn't have a resource type" in result.stderr


def test_python_client_lists_across_clusters_and_gets_one(registered: APIServer) -> None:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(registered.kubeconfig), client_configuration=configuration
    )
    base = configuration.host
    configuration.host = base + PREFIX
    with kubernetes.client.ApiClient(configuration) as api:
        pods = kubernetes.client.CoreV1Api(api).list_pod_for_all_namespaces()
        assert len(pods.items) == 10
        assert {
            p.metadata.annotations["shadow.clusterpedia.io/cluster-name"] for p in pods.items
        } == {"c1", "c2"}
    configuration.host = base + PREFIX + "/clusters/c1"
    with kubernetes.client.ApiClient(configuration) as api:
        pod = kubernetes.client.CoreV1Api(api).read_namespaced_pod("web-0", "team-a")
        assert pod.spec.node_name == "node-1" and pod.status.pod_ip == "10.0.0.1"


def _user_kubeconfig(host: APIServer, tmp_path: Path, user: str) -> Path:
    pair = host.pki.issue_client_cert(tmp_path, user=user)
    config = host.kubeconfig_dict()
    config["users"][0]["user"] = {
        "client-certificate-data": base64.b64encode(pair.cert.read_bytes()).decode(),
        "client-key-data": base64.b64encode(pair.key.read_bytes()).decode(),
    }
    path = tmp_path / f"{user}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_rbac_of_the_host_decides_through_the_aggregator(
    registered: APIServer, tmp_path: Path
) -> None:
    registered.kubectl("apply", "-f", "-", input=READER_ROLE)
    user = f"user-{int(time.time() * 1000)}"
    kubeconfig = _user_kubeconfig(registered, tmp_path, user)

    def get_pods() -> Any:
        return registered.kubectl(
            f"--kubeconfig={kubeconfig}",
            f"--server={registered.url}{PREFIX}",
            "get",
            "pods",
            "-A",
            check=False,
        )

    denied = get_pods()
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    registered.kubectl(
        "create",
        "clusterrolebinding",
        f"{user}-reader",
        "--clusterrole=clusterpedia-reader",
        f"--user={user}",
    )
    deadline = time.monotonic() + 30  # the server caches denials for 10 s
    while (allowed := get_pods()).returncode != 0 and time.monotonic() < deadline:
        time.sleep(1)
    assert allowed.returncode == 0, allowed.stderr
    assert len(_rows(allowed.stdout)) == 10


# -- directly (not through the aggregator) ------------------------------------------------


def test_forged_remote_user_without_front_proxy_certificate_is_rejected(
    server: ServerThread, host: APIServer
) -> None:
    status, _, body = server.request(
        f"{PREFIX}/api/v1/pods",
        headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"},
    )
    assert status == 401 and parse(body)["reason"] == "Unauthorized"
    # A client certificate from the host's client CA is not a front proxy either: the TLS
    # handshake refuses it, since the server trusts only the front-proxy CA.
    with pytest.raises(OSError):
        server.request(
            f"{PREFIX}/api/v1/pods",
            headers={"X-Remote-User": "admin"},
            cert=(str(host.pki.admin.cert), str(host.pki.admin.key)),
        )


def test_bearer_tokens_are_reviewed_and_authorized(server: ServerThread, host: APIServer) -> None:
    stranger = service_account_token(host, "stranger", reader=False)
    status, _, body = server.request(f"{PREFIX}/api/v1/pods", token=stranger)
    assert status == 403 and parse(body)["reason"] == "Forbidden"
    reader = service_account_token(host, "reader", reader=True)
    status, _, body = server.request(f"{PREFIX}/api/v1/pods", token=reader)
    assert status == 200 and len(parse(body)["items"]) == 10
    status, _, body = server.request(f"{PREFIX}/api/v1/pods", token="not-a-token")
    assert status == 401


def test_health_is_open_and_metrics_need_rights(server: ServerThread, host: APIServer) -> None:
    for path in ("/healthz", "/livez", "/readyz"):
        assert server.request(path)[0] == 200
    assert server.request("/metrics")[0] == 401
    stranger = service_account_token(host, "stranger", reader=False)
    assert server.request("/metrics", token=stranger)[0] == 403


def test_per_cluster_authorization_hides_other_clusters(
    host: APIServer, database_url: str, tmp_path: Path
) -> None:
    reader = service_account_token(host, "team-c1", reader=True)
    allow_only_cluster(host, service_account="team-c1", cluster="c1")
    guarded = start_server(host, database_url, cert_dir=str(tmp_path), check_clusters=True)
    try:
        status, _, body = guarded.request(f"{PREFIX}/api/v1/pods", token=reader)
        assert status == 200
        clusters = {
            p["metadata"]["annotations"]["shadow.clusterpedia.io/cluster-name"]
            for p in parse(body)["items"]
        }
        assert clusters == {"c1"}
        status, _, body = guarded.request(f"{PREFIX}/clusters/c2/api/v1/pods", token=reader)
        assert status == 403 and parse(body)["details"]["name"] == "c2"
        status, _, body = guarded.request(f"{PREFIX}/apis", token=reader)
        assert status == 200 and [g["name"] for g in parse(body)["groups"]] == ["apps"]
    finally:
        guarded.stop()


@pytest.fixture(scope="module")
def reader_token(host: APIServer, server: ServerThread) -> str:
    return service_account_token(host, "reader", reader=True)


TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


@pytest.mark.parametrize(
    ("path", "code", "reason"),
    [
        (f"{PREFIX}/api/v1/pods?labelSelector=app%20in%20(", 400, "BadRequest"),
        (f"{PREFIX}/api/v1/pods?limit=many", 400, "BadRequest"),
        (f"{PREFIX}/api/v1/pods?limit=5&continue=bm90LWEtdG9rZW4", 400, "BadRequest"),
        (f"{PREFIX}/api/v1/pods?orderby=object;drop", 400, "BadRequest"),
        (f"{PREFIX}/api/v1/pods?whereSQLStatement=1%3D1", 422, "Invalid"),
        (f"{PREFIX}/api/v1/pods?watch=true&sendInitialEvents=true", 422, "Invalid"),
        (f"{PREFIX}/api/v1/pods?watch=true&resourceVersionMatch=NotOlderThan", 422, "Invalid"),
        (f"{PREFIX}/api/v1/pods?watch=true&resourceVersion=abc", 400, "BadRequest"),
        (f"{PREFIX}/api/v1/pods?watch=true&resourceVersion=99999999999", 504, "Timeout"),
        (f"{PREFIX}/api/v1/pods?watch=true&timeoutSeconds=soon", 400, "BadRequest"),
        (f"{PREFIX}/api/v1/pods?watch=true&allowWatchBookmarks=maybe", 400, "BadRequest"),
        (f"{PREFIX}/clusters/c1/api/v1/pods?watch=true&ownerUID=x", 400, "BadRequest"),
        (
            "/apis/clusterpedia.io/v1beta1/collectionresources/any?watch=true",
            405,
            "MethodNotAllowed",
        ),
        (f"{PREFIX}/api/v1/namespaces/team-a/pods/web-0", 400, "BadRequest"),
        (f"{PREFIX}/clusters/nope/api/v1/pods", 400, "BadRequest"),
        (f"{PREFIX}/clusters/c1/api/v1/namespaces/team-a/pods/missing", 404, "NotFound"),
        (f"{PREFIX}/api/v1/secrets", 404, "NotFound"),
        (f"{PREFIX}/api/v1/namespaces/team-a/namespaces", 404, "NotFound"),
        (f"{PREFIX}/clusters/c1/api/v1/namespaces/team-a/pods/web-0/log", 404, "NotFound"),
        (f"{PREFIX}/apis/nothing.io/v1", 404, "NotFound"),
        ("/apis/clusterpedia.io/v1beta1/collectionresources/any", 400, "BadRequest"),
        ("/apis/clusterpedia.io/v1beta1/collectionresources/nope", 404, "NotFound"),
        ("/apis/clusterpedia.io/v1beta1/nowhere", 404, "NotFound"),
        ("/nowhere", 403, "Forbidden"),  # authorization comes before routing, as in Kubernetes
    ],
)
def test_bad_requests_get_status_objects(
    server: ServerThread, reader_token: str, path: str, code: int, reason: str
) -> None:
    status, headers, body = server.request(path, token=reader_token)
    assert status == code, body
    assert headers["Content-Type"].startswith("application/json")
    document = parse(body)
    assert (document["kind"], document["status"], document["reason"], document["code"]) == (
        "Status",
        "Failure",
        reason,
        code,
    )


def test_not_found_names_the_object(server: ServerThread, reader_token: str) -> None:
    _, _, body = server.request(
        f"{PREFIX}/clusters/c1/api/v1/namespaces/team-a/pods/missing", token=reader_token
    )
    assert parse(body)["details"] == {"name": "missing", "group": "", "kind": "pods"}


def test_writes_are_refused(server: ServerThread, reader_token: str) -> None:
    request = urllib.request.Request(
        server.url + f"{PREFIX}/api/v1/namespaces/team-a/pods",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {reader_token}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, context=server.ssl_context(), timeout=10)
    assert refused.value.code in (403, 405)  # SAR says no to "create" before we would


def test_oversized_requests_are_refused(server: ServerThread, reader_token: str) -> None:
    huge = "x" * (10 * 1024 * 1024)
    for path, headers in (
        (f"{PREFIX}/api/v1/pods?labelSelector={huge}", {}),
        (f"{PREFIX}/api/v1/pods", {"X-Padding": huge}),
    ):
        try:  # a 4xx, or the connection closed while the client was still sending
            status, _, _ = server.request(path, token=reader_token, headers=headers)
        except OSError:
            continue
        assert 400 <= status < 500
    assert server.request("/healthz")[0] == 200  # and the server is still there


def test_accept_forms(server: ServerThread, reader_token: str) -> None:
    path = f"{PREFIX}/clusters/c1/api/v1/namespaces/team-a/pods"
    status, _, body = server.request(
        path, token=reader_token, headers={"Accept": "application/vnd.kubernetes.protobuf"}
    )
    assert status == 406
    _, _, body = server.request(
        path,
        token=reader_token,
        headers={"Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"},
    )
    partial = parse(body)
    assert partial["kind"] == "PartialObjectMetadataList"
    assert {i["kind"] for i in partial["items"]} == {"PartialObjectMetadata"}
    assert sorted(i["metadata"]["name"] for i in partial["items"]) == ["web-0", "web-1", "web-2"]
    _, _, body = server.request(
        path + "?includeObject=Object", token=reader_token, headers={"Accept": TABLE}
    )
    table = parse(body)
    assert table["kind"] == "Table" and table["columnDefinitions"][0]["name"] == "Cluster"
    assert [c["name"] for c in table["columnDefinitions"]][1:6] == [
        "Name", "Ready", "Status", "Restarts", "Age",
    ]  # fmt: skip
    assert table["rows"][0]["cells"][:5] == ["c1", "web-0", "1/1", "Running", "2"]
    assert table["rows"][0]["object"]["kind"] == "Pod"
    status, _, _ = server.request(
        path + "?includeObject=All", token=reader_token, headers={"Accept": TABLE}
    )
    assert status == 400


def test_aggregated_discovery_form(server: ServerThread, reader_token: str) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    _, headers, body = server.request(
        f"{PREFIX}/apis", token=reader_token, headers={"Accept": accept}
    )
    assert headers["Content-Type"] == (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )
    document = parse(body)
    groups = {item["metadata"]["name"]: item for item in document["items"]}
    widgets = groups["example.io"]["versions"][0]["resources"][0]
    assert widgets["responseKind"] == {"group": "example.io", "version": "v1", "kind": "Widget"}
    assert widgets["scope"] == "Namespaced" and widgets["verbs"] == ["get", "list", "watch"]
    _, headers, body = server.request("/apis", token=reader_token, headers={"Accept": accept})
    own = parse(body)["items"][0]
    assert own["metadata"]["name"] == "clusterpedia.io"


def test_search_parameters_and_paging(server: ServerThread, reader_token: str) -> None:
    base = f"{PREFIX}/api/v1/pods"
    _, _, body = server.request(
        base + "?clusters=c2&namespaces=team-a&orderby=name%20desc", token=reader_token
    )
    assert [p["metadata"]["name"] for p in parse(body)["items"]] == ["web-2", "web-1", "web-0"]
    seen, token = [], ""
    while True:
        _, _, body = server.request(
            base + f"?limit=4&withRemainingCount=true&continue={token}", token=reader_token
        )
        page = parse(body)
        seen += [p["metadata"]["uid"] for p in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
        assert page["metadata"]["remainingItemCount"] == 10 - len(seen)
    assert len(seen) == len(set(seen)) == 10


def test_collection_resources(server: ServerThread, reader_token: str) -> None:
    _, _, body = server.request(
        "/apis/clusterpedia.io/v1beta1/collectionresources", token=reader_token
    )
    assert [i["metadata"]["name"] for i in parse(body)["items"]] == [
        "any",
        "workloads",
        "kuberesources",
    ]
    _, _, body = server.request(
        "/apis/clusterpedia.io/v1beta1/collectionresources/workloads", token=reader_token
    )
    workloads = parse(body)
    assert workloads["resourceTypes"] == [
        {"group": "apps", "version": "v1", "kind": "Deployment", "resource": "deployments"}
    ]
    assert [i["metadata"]["name"] for i in workloads["items"]] == ["web"]
    _, _, body = server.request(
        "/apis/clusterpedia.io/v1beta1/collectionresources/any?resources=example.io/widgets,apps/deployments",
        token=reader_token,
    )
    assert sorted(i["kind"] for i in parse(body)["items"]) == ["Deployment", "Widget"]


def test_serving_certificate_from_files(host: APIServer, database_url: str, tmp_path: Path) -> None:
    ca, chain, private_key = issue_serving_certificate(
        ["127.0.0.1", "clusterpedia-apiserver.clusterpedia-system.svc"]
    )
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(chain)
    key.write_bytes(private_key)
    given = start_server(host, database_url, cert_file=str(cert), key_file=str(key))
    try:
        context = ssl.create_default_context(cadata=ca.decode())
        with urllib.request.urlopen(f"{given.url}/healthz", context=context, timeout=10) as answer:
            assert answer.read() == b"ok"
    finally:
        given.stop()


def test_an_unhealthy_cluster_comes_with_a_warning(
    registered: APIServer, server: ServerThread, reader_token: str
) -> None:
    _, headers, _ = server.request(f"{PREFIX}/clusters/c2/api/v1/pods", token=reader_token)
    assert headers["Warning"].startswith('299 - "c2 is not ready and the resources obtained')
    assert "/readyz answered 500" in headers["Warning"]
    _, headers, _ = server.request(f"{PREFIX}/clusters/c2/api/v1/pods?limit=2", token=reader_token)
    assert "c2 is not ready" in headers["Warning"]
    _, headers, _ = server.request(f"{PREFIX}/clusters/c1/api/v1/pods", token=reader_token)
    assert "Warning" not in headers
    shown = kubectl(registered, "get", "pods", "-A", cluster="c2")
    assert "Warning: c2 is not ready" in shown.stderr and "web-0" in shown.stdout


def test_tls_below_1_2_is_refused_by_the_server(server: ServerThread) -> None:
    def handshake(maximum: ssl.TLSVersion) -> str:
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(cadata=server.ca_pem.decode())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is, on purpose
            client.minimum_version = ssl.TLSVersion.TLSv1
            client.maximum_version = maximum
        client.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            return str(tls.version())

    # The server ends the handshake (asyncio closes it rather than sending an alert); the
    # same client with TLS 1.2 allowed gets through, so the refusal is the server's.
    with pytest.raises(ssl.SSLError, match=r"ALERT_PROTOCOL_VERSION|UNEXPECTED_EOF"):
        handshake(ssl.TLSVersion.TLSv1_1)
    assert handshake(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"


# -- request metrics, against kube-apiserver's own ----------------------------------------------


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(families: dict[str, Any], sample: str, **labels: str) -> float:
    """The sum of ``sample``'s values whose labels include ``labels``."""
    total = 0.0
    for family in families.values():
        for found in family.samples:
            if found.name == sample and labels.items() <= found.labels.items():
                total += found.value
    return total


def _scrape(server: ServerThread, host: APIServer) -> dict[str, Any]:
    assert host.pki.front_proxy_client is not None
    status, _, body = server.request(
        "/metrics",
        cert=(str(host.pki.front_proxy_client.cert), str(host.pki.front_proxy_client.key)),
        headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"},
    )
    assert status == 200
    return _families(body.decode())


REQUEST_METRICS = (
    "apiserver_request", "apiserver_request_duration_seconds", "apiserver_response_sizes",
    "apiserver_current_inflight_requests", "apiserver_longrunning_requests",
    "apiserver_watch_events",
)  # fmt: skip


def test_requests_move_the_right_series(
    server: ServerThread, host: APIServer, registered: APIServer
) -> None:
    """A list, a get, a watch, a 403 and a made-up path, each counted with the labels
    kube-apiserver would give it (the member's resource, not our path)."""
    pods = {"group": "", "version": "v1", "resource": "pods", "component": "apiserver"}
    before = _scrape(server, host)
    kubectl(registered, "get", "pods", "-A")
    kubectl(registered, "get", "pod", "web-0", "-n", "team-a", cluster="c1")
    stranger = service_account_token(host, "stranger", reader=False)
    assert server.request(f"{PREFIX}/api/v1/pods", token=stranger)[0] == 403
    assert server.request(f"{PREFIX}/clusters/c1/api/v1/made-up-{time.time_ns()}")[0] == 401
    assert host.pki.front_proxy_client is not None
    admin = {
        "cert": (str(host.pki.front_proxy_client.cert), str(host.pki.front_proxy_client.key)),
        "headers": {"X-Remote-User": "admin", "X-Remote-Group": "system:masters"},
    }
    assert (
        server.request(f"{PREFIX}/clusters/c1/api/v1/made-up-{time.time_ns()}", **admin)[0] == 404
    )
    watch = f"{PREFIX}/api/v1/namespaces/team-a/pods?watch=true&timeoutSeconds=1&resourceVersion=1"
    assert server.request(watch, **admin)[0] == 200
    after = _scrape(server, host)

    def moved(sample: str, **labels: str) -> float:
        return _value(after, sample, **labels) - _value(before, sample, **labels)

    total = "apiserver_request_total"
    assert moved(total, verb="LIST", scope="cluster", code="200", **pods) >= 1
    assert moved(total, verb="GET", scope="resource", code="200", **pods) >= 1
    assert moved(total, verb="WATCH", scope="namespace", code="200", **pods) >= 1
    assert moved(total, verb="LIST", scope="cluster", code="403", **pods) == 1
    # a path that names nothing we serve carries no resource: no series per made-up name
    assert moved(total, resource="", subresource="", code="404") >= 1
    assert not any("made-up" in str(s.labels) for family in after.values() for s in family.samples)
    assert moved("apiserver_request_duration_seconds_count", verb="LIST", **pods) >= 2
    assert moved("apiserver_response_sizes_count", verb="GET", scope="resource", **pods) >= 1
    assert _value(after, "apiserver_current_inflight_requests", request_kind="readOnly") >= 1
    # the watch from resourceVersion 1 replayed the seeded pods of team-a
    assert moved("apiserver_watch_events_total", group="", version="v1", resource="pods") >= 3


def test_request_metrics_have_kube_apiservers_names_labels_and_buckets(
    server: ServerThread, host: APIServer
) -> None:
    """The host is a real kube-apiserver: every request metric it and we both expose has the
    same label names, and the histograms the same buckets (after the test above, so that every
    one of ours has samples)."""
    theirs, ours = _families(host.get("/metrics").decode()), _scrape(server, host)
    for name in REQUEST_METRICS:
        assert name in theirs and name in ours, name
        for family in (theirs[name], ours[name]):
            assert family.samples, name
        their_labels = {frozenset(s.labels) - {"le"} for s in theirs[name].samples}
        our_labels = {frozenset(s.labels) - {"le"} for s in ours[name].samples}
        assert our_labels <= their_labels, (name, our_labels, their_labels)
    for histogram in ("apiserver_request_duration_seconds", "apiserver_response_sizes"):
        buckets = [
            {float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")}
            for family in (theirs[histogram], ours[histogram])
        ]
        assert buckets[0] == buckets[1], histogram
