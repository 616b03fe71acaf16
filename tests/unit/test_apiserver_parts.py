"""The API server's pure parts: request attributes, negotiation, printers, JSONPath,
discovery documents, the kubeconfig helper."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from clusterpedia.apiserver import discovery
from clusterpedia.apiserver.authz import attributes_of
from clusterpedia.apiserver.negotiation import Form, negotiate
from clusterpedia.apiserver.printers import PRINTERS, human_duration
from clusterpedia.apiserver.requestinfo import parse_request
from clusterpedia.apiserver.status import StatusError
from clusterpedia.apiserver.tables import NAME, TableBuilder
from clusterpedia.kubeconfig import KubeconfigError, add_clusterpedia_clusters
from clusterpedia.storage.catalog import SyncedType

# What kubectl 1.35 sends for `get` (its Accept header, Table first).
TABLE = ",".join(
    [
        "application/json;as=Table;v=v1;g=meta.k8s.io",
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
        "application/json",
    ]
)
V2 = ",".join(
    [
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
        "application/json",
    ]
)


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("/api/v1/pods", {}, ("list", "", "v1", "", "pods", "", "")),
        ("/api/v1/pods", {"watch": "true"}, ("watch", "", "v1", "", "pods", "", "")),
        ("/api/v1/namespaces/a/pods/p", {}, ("get", "", "v1", "a", "pods", "p", "")),
        ("/api/v1/namespaces/a", {}, ("get", "", "v1", "a", "namespaces", "a", "")),
        ("/api/v1/namespaces/a/status", {}, ("get", "", "v1", "a", "namespaces", "a", "status")),
        (
            "/apis/apps/v1/namespaces/a/deployments",
            {},
            ("list", "apps", "v1", "a", "deployments", "", ""),
        ),
        (
            "/apis/clusterpedia.io/v1beta1/resources/api/v1/pods",
            {},
            ("get", "clusterpedia.io", "v1beta1", "", "resources", "api", "v1"),
        ),
        (
            "/api/v1/pods",
            {"fieldSelector": "metadata.name=x"},
            ("list", "", "v1", "", "pods", "x", ""),
        ),
    ],
)
def test_request_info_matches_kubernetes(
    path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    info = parse_request(path, "GET", query)
    assert info.is_resource_request
    assert (
        info.verb, info.api_group, info.api_version, info.namespace, info.resource, info.name,
        info.subresource,
    ) == expected  # fmt: skip


@pytest.mark.parametrize(
    "path", ["/healthz", "/api", "/apis", "/apis/apps", "/apis/apps/v1", "/version"]
)
def test_non_resource_paths(path: str) -> None:
    info = parse_request(path, "GET")
    assert not info.is_resource_request
    assert attributes_of(info) == {"nonResourceAttributes": {"path": path, "verb": "get"}}


def test_negotiation_follows_the_clients_order() -> None:
    assert negotiate(TABLE, allowed={Form.JSON, Form.TABLE}) is Form.TABLE
    assert negotiate(TABLE, allowed={Form.JSON}) is Form.JSON
    assert negotiate(V2, allowed={Form.JSON, Form.DISCOVERY_V2}) is Form.DISCOVERY_V2
    assert negotiate(None, allowed={Form.JSON}) is Form.JSON
    assert negotiate("*/*", allowed={Form.JSON}) is Form.JSON
    partial = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
    assert negotiate(partial, allowed={Form.JSON, Form.METADATA}) is Form.METADATA
    with pytest.raises(StatusError) as refused:
        negotiate("application/vnd.kubernetes.protobuf", allowed={Form.JSON})
    assert refused.value.code == 406


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "<invalid>"), (0, "0s"), (119, "119s"), (125, "2m5s"), (600, "10m"),
     (3 * 3600 + 60, "3h1m"), (10 * 3600, "10h"), (3 * 86400 + 3600, "3d1h"), (30 * 86400, "30d"),
     (800 * 86400, "2y70d")],
)  # fmt: skip
def test_human_duration_matches_kubectl(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_every_printer_row_matches_its_columns() -> None:
    sample: dict[str, Any] = {
        "metadata": {"name": "x", "creationTimestamp": "2024-01-01T00:00:00Z"}
    }
    for group, resource in PRINTERS:
        builder = TableBuilder(None, group=group, resource=resource, include="None")
        row = builder.row(orjson.dumps(sample), cluster="c1")
        assert len(row["cells"]) == len(builder.columns), (group, resource)
        assert sum(1 for c in builder.columns if c.format == "name") == 1, (group, resource)


def test_pod_status_like_kubectl() -> None:
    pod = {
        "metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": "a", "ready": True, "restartCount": 1, "state": {"running": {}}},
                {
                    "name": "b",
                    "ready": False,
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                },
            ],
        },
    }
    cells = PRINTERS[("", "pods")].row(pod)
    assert cells[:4] == ["p", "1/2", "CrashLoopBackOff", "5"]


def test_custom_resources_without_columns_get_name_and_age() -> None:
    widget = SyncedType("c1", "example.io", "v1", "widgets", "Widget", True)
    builder = TableBuilder(widget, group="example.io", resource="widgets", include="Metadata")
    assert [c.name for c in builder.columns] == ["Cluster", "Name", "Age"]
    assert builder.columns[1] == NAME


def test_discovery_unions_clusters_and_orders_versions() -> None:
    types = [
        SyncedType("c1", "example.io", "v1beta1", "widgets", "Widget", True),
        SyncedType("c2", "example.io", "v1", "widgets", "Widget", True),
        SyncedType("c2", "example.io", "v1", "widgets", "Widget", True),
        SyncedType("c1", "", "v1", "pods", "Pod", True, "pod", ("po",)),
    ]
    catalogue = discovery.ServedTypes(types)
    assert catalogue.groups() == {"": ["v1"], "example.io": ["v1", "v1beta1"]}
    group = discovery.api_group("example.io", catalogue.groups()["example.io"])
    assert group["preferredVersion"]["version"] == "v1"
    v2 = discovery.aggregated(catalogue, core=True, form=Form.DISCOVERY_V2)
    pods = v2["items"][0]["versions"][0]["resources"][0]
    assert pods["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert pods["shortNames"] == ["po"] and "delete" not in pods["verbs"]


def test_kubeconfig_helper_adds_entries_and_respects_foreign_ones() -> None:
    config: dict[str, Any] = {
        "current-context": "host",
        "contexts": [{"name": "host", "context": {"cluster": "host", "user": "me"}}],
        "clusters": [
            {
                "name": "host",
                "cluster": {"server": "https://h:6443", "certificate-authority-data": "Q0E="},
            },
            {"name": "c2", "cluster": {"server": "https://elsewhere"}},
        ],
    }
    written, skipped = add_clusterpedia_clusters(config, ["c1", "c2"])
    assert written == ["clusterpedia", "c1"] and skipped == ["c2"]
    clusters = {c["name"]: c["cluster"] for c in config["clusters"]}
    assert clusters["clusterpedia"] == {
        "server": "https://h:6443/apis/clusterpedia.io/v1beta1/proxy/resources",  # long-running
        "certificate-authority-data": "Q0E=",
    }
    assert clusters["c1"]["server"].endswith("/proxy/resources/clusters/c1")
    assert clusters["c2"] == {"server": "https://elsewhere"}
    # Entries of ours are rewritten in either layout; --original-paths writes the original's.
    written, _ = add_clusterpedia_clusters(config, ["c1"], original_paths=True)
    clusters = {c["name"]: c["cluster"] for c in config["clusters"]}
    assert written == ["clusterpedia", "c1"]
    assert (
        clusters["c1"]["server"]
        == "https://h:6443/apis/clusterpedia.io/v1beta1/resources/clusters/c1"
    )
    with pytest.raises(KubeconfigError):
        add_clusterpedia_clusters({"clusters": []}, [])


def test_the_long_running_layout_stands_for_the_originals_path() -> None:
    from clusterpedia.paths import without_long_running_prefix

    assert (
        without_long_running_prefix("/apis/clusterpedia.io/v1beta1/proxy/resources/api/v1/pods")
        == "/apis/clusterpedia.io/v1beta1/resources/api/v1/pods"
    )
    assert (
        without_long_running_prefix("/apis/clusterpedia.io/v1beta1/proxy/resources")
        == "/apis/clusterpedia.io/v1beta1/resources"
    )
    for other in (
        "/apis/clusterpedia.io/v1beta1/resources/api/v1/pods",
        "/apis/clusterpedia.io/v1beta1/proxy/resourcesx",
        "/apis/clusterpedia.io/v1beta1/proxy",
    ):
        assert without_long_running_prefix(other) is None
