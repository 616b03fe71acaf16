"""The serving TLS context: our certificate, and the front-proxy CA as the only trusted CA.

Trusting nothing else is what lets the authenticator treat "the client certificate verified"
as "the front proxy signed it" (Python cannot tell which CA verified a chain before 3.13).
When the CA bundle changes, new connections switch to a fresh context through the SNI
callback (it runs for every handshake, with or without SNI); open ones keep theirs.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from clusterpedia.certs import issue_serving_certificate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingCertificate:
    cert_file: Path
    key_file: Path
    ca_pem: bytes = b""  # the CA that signed it, when we generated it


def self_signed(directory: Path, hosts: list[str]) -> ServingCertificate:
    """A throwaway CA and a serving certificate for ``hosts`` (as the original generates one
    when no certificate is given). Clients must be told the CA, e.g. the APIService caBundle."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, chain, key = issue_serving_certificate(hosts, organization="clusterpedia-py self-signed")
    cert_file, key_file = directory / "apiserver.crt", directory / "apiserver.key"
    cert_file.write_bytes(chain)
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    (directory / "ca.crt").write_bytes(ca)
    return ServingCertificate(cert_file, key_file, ca)


class ServingTLS:
    """The context given to the listener, and the one that currently serves handshakes."""

    def __init__(self, certificate: ServingCertificate, *, client_ca: str = ""):
        self.certificate = certificate
        self.client_ca = client_ca
        self._current = self._build(client_ca)
        self.context = self._build(client_ca)
        self.context.sni_callback = self._select

    def _build(self, client_ca: str) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificate.cert_file, self.certificate.key_file)
        context.set_alpn_protocols(["http/1.1"])
        # Ask for a client certificate, never require one: bearer-token clients have none.
        context.verify_mode = ssl.CERT_OPTIONAL
        if client_ca:
            context.load_verify_locations(cadata=client_ca)
        return context

    def _select(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        ssl_object.context = self._current

    def trust(self, client_ca: str) -> None:
        """Trust ``client_ca`` (the front-proxy CA bundle) for connections from now on."""
        if client_ca == self.client_ca:
            return
        self._current = self._build(client_ca)
        self.client_ca = client_ca
        logger.info("front-proxy CA bundle changed; new connections use the new one")
