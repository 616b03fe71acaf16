"""Registering a clusterpedia API server with a host's aggregation layer, as an install does,
for tests, benchmarks and the playground: no kube-proxy, so the Service is an ExternalName to
``localhost`` (aggregator routing off), and the APIService trusts the serving CA."""

from __future__ import annotations

from typing import Any

import yaml

from clusterpedia.certs import apiservice_object
from clusterpedia.testing.controlplane import APIServer

SERVICE_NAMESPACE = "clusterpedia-system"


def apiservice_manifests(*, port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    """Our server behind an APIService (``caBundle`` set, never insecure) and an ExternalName
    Service to ``localhost``: routable with aggregator routing off and no kube-proxy."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SERVICE_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "clusterpedia-apiserver", "namespace": SERVICE_NAMESPACE},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": port}],
            },
        },
        apiservice_object(namespace=SERVICE_NAMESPACE, ca_pem=ca_pem, port=port),
    ]


def register_apiservice(host: APIServer, *, port: int, ca_pem: bytes) -> None:
    """Register our server with ``host``'s aggregation layer; wait until it is Available."""
    host.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump_all(apiservice_manifests(port=port, ca_pem=ca_pem))
    )
    host.kubectl(
        "wait", "--for=condition=Available", "--timeout=90s", "apiservice/v1beta1.clusterpedia.io"
    )
