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


READER_ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: clusterpedia-reader}
rules:
- apiGroups: [clusterpedia.io]
  resources: ["*"]  # resources/<inner path> is a subresource; RBAC has no "resources/*"
  verbs: [get, list, watch, proxy]
"""


def service_account_token(host: APIServer, name: str, *, reader: bool) -> str:
    """A token of ServiceAccount ``tokens/<name>`` in ``host``, bound to the
    ``clusterpedia-reader`` ClusterRole when ``reader``."""
    host.kubectl("create", "namespace", "tokens", check=False)
    host.kubectl("create", "serviceaccount", name, "-n", "tokens", check=False)
    if reader:
        host.kubectl("apply", "-f", "-", input=READER_ROLE)
        host.kubectl(
            "create", "clusterrolebinding", f"{name}-reader", "--clusterrole=clusterpedia-reader",
            f"--serviceaccount=tokens:{name}", check=False,
        )  # fmt: skip
    return str(host.kubectl("create", "token", name, "-n", "tokens").stdout.strip())


def allow_only_cluster(host: APIServer, *, service_account: str, cluster: str) -> None:
    """Let ``tokens/<service_account>`` read PediaCluster ``cluster`` alone: what
    ``--authorize-clusters`` checks."""
    host.kubectl("apply", "-f", "-", input=f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: pediacluster-{cluster}}}
rules:
- apiGroups: [cluster.clusterpedia.io]
  resources: [pediaclusters]
  resourceNames: [{cluster}]
  verbs: [get]
""")  # fmt: skip
    host.kubectl(
        "create", "clusterrolebinding", f"{service_account}-{cluster}",
        f"--clusterrole=pediacluster-{cluster}", f"--serviceaccount=tokens:{service_account}",
        check=False,
    )  # fmt: skip
