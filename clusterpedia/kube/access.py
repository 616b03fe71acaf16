"""How to reach a member cluster: server URL, TLS context and credentials.

Built from a PediaCluster spec exactly as the original does (``pkg/utils/rest.go``):
``kubeconfig`` wins; otherwise ``apiserver`` with ``caData``/``tokenData``/``certData``+
``keyData``. Without a CA the original skips TLS verification; we do the same for
compatibility, and say so (``insecure``) so the status can warn the user.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml


class InvalidClusterConfig(ValueError):
    """The PediaCluster's connection settings are unusable; the message says why."""


@dataclass(frozen=True)
class MemberAccess:
    """Everything a client needs to talk to one member API server."""

    server: str
    ssl_context: ssl.SSLContext = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    insecure: bool = False

    @property
    def host(self) -> str:
        return urlsplit(self.server).netloc


def _decode(value: str | bytes | None, *, what: str) -> bytes | None:
    """Spec fields hold base64 (``format: byte``)."""
    if value in (None, "", b""):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidClusterConfig(f"{what} is not valid base64") from None


def _server(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise InvalidClusterConfig(f"apiserver {url!r} is not an http(s) URL")
    return url.rstrip("/")


def _context(
    *, ca: bytes | None, cert: bytes | None, key: bytes | None, server_name: str | None = None
) -> tuple[ssl.SSLContext, bool]:
    context = ssl.create_default_context()
    insecure = ca is None
    if ca is not None:
        try:
            context = ssl.create_default_context(cadata=ca.decode())
        except (ssl.SSLError, ValueError, UnicodeDecodeError) as error:
            raise InvalidClusterConfig(f"caData is not a PEM CA bundle: {error}") from None
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if (cert is None) != (key is None):
        raise InvalidClusterConfig("certData and keyData must be given together")
    if cert is not None and key is not None:
        _load_client_pair(context, cert, key)
    if server_name and not insecure:
        context.check_hostname = True
    return context, insecure


def _load_client_pair(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # The ssl module loads key pairs from files only: a private temporary file, removed at once.
    handle, path = tempfile.mkstemp(prefix="clusterpedia-client-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(cert.rstrip() + b"\n" + key)
        context.load_cert_chain(path)
    except ssl.SSLError as error:
        raise InvalidClusterConfig(f"certData/keyData are not a valid key pair: {error}") from None
    finally:
        os.unlink(path)


def access_from_kubeconfig(data: bytes) -> MemberAccess:
    """The current context of a kubeconfig (inline data only: files and exec plugins refer to
    the operator's file system or binaries, which a PediaCluster cannot rely on)."""
    try:
        config = yaml.safe_load(data)
    except yaml.YAMLError as error:
        raise InvalidClusterConfig(f"kubeconfig is not valid YAML: {error}") from None
    if not isinstance(config, dict):
        raise InvalidClusterConfig("kubeconfig is not a mapping")

    def named(section: str, name: str | None) -> dict[str, Any]:
        for entry in config.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                value = entry.get(section[:-1])
                return value if isinstance(value, dict) else {}
        raise InvalidClusterConfig(f"kubeconfig has no {section[:-1]} named {name!r}")

    context = named("contexts", config.get("current-context"))
    cluster = named("clusters", context.get("cluster"))
    user = named("users", context.get("user")) if context.get("user") else {}
    if "server" not in cluster:
        raise InvalidClusterConfig("kubeconfig cluster has no server")
    for unsupported in (
        "certificate-authority",
        "client-certificate",
        "client-key",
        "tokenFile",
        "exec",
        "auth-provider",
    ):
        if unsupported in cluster or unsupported in user:
            raise InvalidClusterConfig(
                f"kubeconfig uses {unsupported!r}, which refers to files or programs of the "
                "machine it was written on; embed the data (e.g. client-certificate-data) instead"
            )
    ca = (
        None
        if cluster.get("insecure-skip-tls-verify")
        else _decode(cluster.get("certificate-authority-data"), what="certificate-authority-data")
    )
    ssl_context, insecure = _context(
        ca=ca,
        cert=_decode(user.get("client-certificate-data"), what="client-certificate-data"),
        key=_decode(user.get("client-key-data"), what="client-key-data"),
    )
    headers = {}
    if user.get("token"):
        headers["Authorization"] = f"Bearer {user['token']}"
    elif user.get("username") and user.get("password"):
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    return MemberAccess(
        server=_server(str(cluster["server"])),
        ssl_context=ssl_context,
        headers=headers,
        insecure=insecure,
    )


def access_from_spec(
    spec: Mapping[str, Any], *, secrets: Mapping[str, bytes] | None = None
) -> MemberAccess:
    """The member access a PediaCluster spec describes.

    ``secrets`` holds the values of its ``authenticationFrom`` references, resolved by the
    caller and keyed ``kubeconfig``/``ca``/``cert``/``key``/``token``."""
    secrets = secrets or {}
    kubeconfig = _decode(spec.get("kubeconfig"), what="kubeconfig") or secrets.get("kubeconfig")
    if kubeconfig:
        return access_from_kubeconfig(kubeconfig)
    if not spec.get("apiserver"):
        raise InvalidClusterConfig("Cluster APIServer Endpoint is required")
    token = _decode(spec.get("tokenData"), what="tokenData")
    cert = _decode(spec.get("certData"), what="certData")
    key = _decode(spec.get("keyData"), what="keyData")
    if not token and not (cert and key):
        token = secrets.get("token")
        cert, key = secrets.get("cert"), secrets.get("key")
    if not token and not (cert and key):
        raise InvalidClusterConfig("Cluster APIServer's Token or Cert is required")
    ca = _decode(spec.get("caData"), what="caData") or secrets.get("ca")
    ssl_context, insecure = _context(ca=ca, cert=cert, key=key)
    headers = {"Authorization": f"Bearer {token.decode().strip()}"} if token else {}
    return MemberAccess(
        server=_server(str(spec["apiserver"])),
        ssl_context=ssl_context,
        headers=headers,
        insecure=insecure,
    )
