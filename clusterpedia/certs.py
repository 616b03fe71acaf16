"""``clusterpedia certs``: the serving certificate and the APIService that trusts it.

The aggregation layer verifies our certificate against the APIService's ``caBundle`` for the
name ``<service>.<namespace>.svc`` (it sets that server name whatever it dials). This writes a
fresh CA and a certificate for that name as a ``kubernetes.io/tls`` Secret, and the APIService
with the CA as ``caBundle``, ready for ``kubectl apply -f``. Never ``insecureSkipTLSVerify``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trustme
import yaml

SECRET_NAME = "clusterpedia-apiserver-tls"
SERVICE_NAME = "clusterpedia-apiserver"


def service_hosts(namespace: str, service: str = SERVICE_NAME) -> list[str]:
    return [
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        f"{service}.{namespace}",
        service,
    ]


def issue_serving_certificate(
    hosts: Sequence[str], *, organization: str = "clusterpedia-py serving"
) -> tuple[bytes, bytes, bytes]:
    """A new CA and a serving certificate for ``hosts``: (CA, certificate chain, key) as PEM."""
    authority = trustme.CA(organization_name=organization)
    leaf = authority.issue_cert(*hosts)
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return authority.cert_pem.bytes(), chain, leaf.private_key_pem.bytes()


def apiservice_object(*, namespace: str, ca_pem: bytes, port: int = 443) -> dict[str, Any]:
    """The APIService ``v1beta1.clusterpedia.io``, trusting ``ca_pem`` (never insecure)."""
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": "v1beta1.clusterpedia.io"},
        "spec": {
            "group": "clusterpedia.io",
            "version": "v1beta1",
            "service": {"namespace": namespace, "name": SERVICE_NAME, "port": port},
            "caBundle": base64.b64encode(ca_pem).decode(),
            "groupPriorityMinimum": 1000,
            "versionPriority": 100,
        },
    }


def write_serving_certs(
    directory: Path, *, namespace: str = "clusterpedia-system", extra_hosts: Sequence[str] = ()
) -> list[Path]:
    """Write ca.crt, tls.crt, tls.key, tls-secret.yaml and apiservice.yaml; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, cert, key = issue_serving_certificate([*service_hosts(namespace), *extra_hosts])

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": SECRET_NAME, "namespace": namespace},
        "data": {"tls.crt": b64(cert), "tls.key": b64(key), "ca.crt": b64(ca)},
    }
    apiservice = apiservice_object(namespace=namespace, ca_pem=ca)
    written = []
    for name, content in (
        ("ca.crt", ca),
        ("tls.crt", cert),
        ("tls.key", key),
        ("tls-secret.yaml", yaml.safe_dump(secret, sort_keys=False).encode()),
        ("apiservice.yaml", yaml.safe_dump(apiservice, sort_keys=False).encode()),
    ):
        path = directory / name
        path.write_bytes(content)
        if name in ("tls.key", "tls-secret.yaml"):
            path.chmod(0o600)
        written.append(path)
    return written
