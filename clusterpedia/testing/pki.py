"""Certificates for a test kube-apiserver, made with trustme.

Each API server gets its own authorities, as separate clusters would: a serving CA, a client CA
(``--client-ca-file``; the admin is ``CN=admin, O=system:masters``), a service-account signing
key, and on request a front-proxy CA with its ``front-proxy-client`` certificate for the
aggregation layer. Everything is written as PEM files into one directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

FRONT_PROXY_CLIENT_NAME = "front-proxy-client"
# trustme marks subjectAltName critical; Go rejects a critical SAN extension that is empty, so
# client certificates carry this placeholder DNS name (the API server ignores SANs of clients).
CLIENT_SAN = "client.invalid"


def issue_client_leaf(ca: trustme.CA, *, user: str, group: str | None = None) -> trustme.LeafCert:
    """A client certificate for ``user`` (CN) in ``group`` (O)."""
    return ca.issue_cert(CLIENT_SAN, common_name=user, organization_name=group)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key as PEM files."""

    cert: Path
    key: Path


def write_leaf(leaf: trustme.LeafCert, directory: Path, name: str) -> KeyPair:
    pair = KeyPair(cert=directory / f"{name}.crt", key=directory / f"{name}.key")
    pair.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(pair.key))
    pair.key.chmod(0o600)
    return pair


def write_ca(ca: trustme.CA, path: Path) -> Path:
    ca.cert_pem.write_to_path(str(path))
    return path


@dataclass(frozen=True)
class APIServerPKI:
    """Paths of every certificate and key one kube-apiserver needs."""

    serving_ca: Path
    serving: KeyPair
    client_ca: Path
    admin: KeyPair
    service_account_key: Path
    service_account_pub: Path
    front_proxy_ca: Path | None
    front_proxy_client: KeyPair | None
    client_ca_authority: trustme.CA

    def issue_client_cert(
        self, directory: Path, *, user: str, groups: tuple[str, ...] = ()
    ) -> KeyPair:
        """A client certificate this server accepts for ``user`` in ``groups``.

        trustme sets one organization, so only the first group is carried in the certificate.
        """
        leaf = issue_client_leaf(
            self.client_ca_authority, user=user, group=groups[0] if groups else None
        )
        return write_leaf(leaf, directory, f"user-{user}")


def make_apiserver_pki(
    directory: Path, *, hostnames: tuple[str, ...] = ("127.0.0.1", "localhost"), front_proxy: bool
) -> APIServerPKI:
    """Create and write the PKI of one API server into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    serving_ca = trustme.CA(organization_name="clusterpedia-test serving")
    client_ca = trustme.CA(organization_name="clusterpedia-test clients")

    signing_key = ec.generate_private_key(ec.SECP256R1())
    sa_key = directory / "sa-signer.key"
    sa_pub = directory / "sa-signer.pub"
    sa_key.write_bytes(
        signing_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    sa_key.chmod(0o600)
    sa_pub.write_bytes(
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    front_proxy_ca_path: Path | None = None
    front_proxy_client: KeyPair | None = None
    if front_proxy:
        # Kept apart from the client CA, as the aggregation docs require.
        front_proxy_ca = trustme.CA(organization_name="clusterpedia-test front-proxy")
        front_proxy_ca_path = write_ca(front_proxy_ca, directory / "front-proxy-ca.crt")
        front_proxy_client = write_leaf(
            issue_client_leaf(front_proxy_ca, user=FRONT_PROXY_CLIENT_NAME),
            directory,
            FRONT_PROXY_CLIENT_NAME,
        )

    return APIServerPKI(
        serving_ca=write_ca(serving_ca, directory / "serving-ca.crt"),
        serving=write_leaf(
            serving_ca.issue_cert(*hostnames, "kubernetes", "kubernetes.default.svc"),
            directory,
            "serving",
        ),
        client_ca=write_ca(client_ca, directory / "client-ca.crt"),
        admin=write_leaf(
            issue_client_leaf(client_ca, user="admin", group="system:masters"),
            directory,
            "admin",
        ),
        service_account_key=sa_key,
        service_account_pub=sa_pub,
        front_proxy_ca=front_proxy_ca_path,
        front_proxy_client=front_proxy_client,
        client_ca_authority=client_ca,
    )
