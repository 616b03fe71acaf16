"""How to reach a member cluster: server URL, TLS context and credentials.

Built from a PediaCluster spec exactly as the original does (``pkg/utils/rest.go``):
``kubeconfig`` wins; otherwise ``apiserver`` with ``caData``/``tokenData``/``certData``+
``keyData``. Without a CA the original skips TLS verification; we do the same for
compatibility, and say so (``insecure``) so the status can warn the user.

Every value that reaches a URL or a header is checked here, so a bad spec is an
:class:`InvalidClusterConfig` (a condition) and never a failure inside a request:

- the server URL: http(s), a host, a port in range, an optional path (proxies such as Rancher
  serve a member under ``/k8s/clusters/<id>``); credentials in the URL are refused, and
  messages show it with :func:`redact_url`;
- credentials over plain HTTP are refused unless ``allow_http_credentials`` (they would cross
  the network in clear text);
- tokens and passwords: UTF-8 without control characters (a CR/LF would split the header).
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

from clusterpedia.yamlerror import yaml_problem


class InvalidClusterConfig(ValueError):
    """The PediaCluster's connection settings are unusable; the message says why."""


@dataclass(frozen=True)
class MemberAccess:
    """Everything a client needs to talk to one member API server."""

    server: str
    ssl_context: ssl.SSLContext = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    insecure: bool = False
    warnings: tuple[str, ...] = ()

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


def redact_url(url: str) -> str:
    """``url`` without a password or user name in it, for logs, events and status."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}://{authority}{slash}{path}"


def _server(url: str) -> str:
    """A member URL as requests need it: ``scheme://host[:port][/path]`` with no trailing
    slash, query or fragment."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port out of range or not a number
        host = parts.hostname
    except ValueError as error:
        raise InvalidClusterConfig(f"apiserver {shown!r} is not a valid URL: {error}") from None
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidClusterConfig(f"apiserver {shown!r} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidClusterConfig(
            f"apiserver {shown!r} has credentials in the URL; use tokenData, certData/keyData "
            "or a kubeconfig"
        )
    if parts.query or parts.fragment:
        raise InvalidClusterConfig(f"apiserver {shown!r} may not have a query or fragment")
    if port == 0 or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise InvalidClusterConfig(f"apiserver {shown!r} is not a valid URL")
    return url.rstrip("/")


def _header_text(value: bytes | str, *, what: str) -> str:
    """A credential as header text: UTF-8, no control characters, surrounding space removed."""
    try:
        text = value.decode() if isinstance(value, bytes) else value
    except UnicodeDecodeError:
        raise InvalidClusterConfig(f"{what} is not UTF-8 text") from None
    text = text.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidClusterConfig(f"{what} holds control characters (a line break?)")
    if not text:
        raise InvalidClusterConfig(f"{what} is empty")
    return text


def _check_transport(
    server: str, *, credentials: bool, allow_http_credentials: bool
) -> tuple[str, ...]:
    """Warnings for the status; :class:`InvalidClusterConfig` for credentials in clear text."""
    if not server.startswith("http://") or not credentials:
        return ()
    if not allow_http_credentials:
        raise InvalidClusterConfig(
            f"apiserver {redact_url(server)!r} is plain HTTP: credentials would be sent in "
            "clear text; use https (or start clusterpedia with --allow-http-credentials)"
        )
    return ("credentials are sent to the member over plain HTTP (--allow-http-credentials)",)


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


def current_context(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cluster and user entries of a kubeconfig's current context."""

    def named(section: str, name: str | None) -> dict[str, Any]:
        for entry in config.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                value = entry.get(section[:-1])
                return value if isinstance(value, dict) else {}
        raise InvalidClusterConfig(f"kubeconfig has no {section[:-1]} named {name!r}")

    context = named("contexts", config.get("current-context"))
    cluster = named("clusters", context.get("cluster"))
    user = named("users", context.get("user")) if context.get("user") else {}
    return cluster, user


def access_from_kubeconfig(data: bytes, *, allow_http_credentials: bool = False) -> MemberAccess:
    """The current context of a kubeconfig (inline data only: files and exec plugins refer to
    the operator's file system or binaries, which a PediaCluster cannot rely on)."""
    try:
        config = yaml.safe_load(data)
    except yaml.YAMLError as error:
        raise InvalidClusterConfig(f"kubeconfig is not valid YAML: {yaml_problem(error)}") from None
    if not isinstance(config, dict):
        raise InvalidClusterConfig("kubeconfig is not a mapping")

    cluster, user = current_context(config)
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
        headers["Authorization"] = f"Bearer {_header_text(str(user['token']), what='token')}"
    elif user.get("username") and user.get("password"):
        username = _header_text(str(user["username"]), what="username")
        password = _header_text(str(user["password"]), what="password")
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    server = _server(str(cluster["server"]))
    return MemberAccess(
        server=server,
        ssl_context=ssl_context,
        headers=headers,
        insecure=insecure,
        warnings=_check_transport(
            server, credentials=bool(headers), allow_http_credentials=allow_http_credentials
        ),
    )


def access_from_spec(
    spec: Mapping[str, Any],
    *,
    secrets: Mapping[str, bytes] | None = None,
    allow_http_credentials: bool = False,
) -> MemberAccess:
    """The member access a PediaCluster spec describes.

    ``secrets`` holds the values of its ``authenticationFrom`` references, resolved by the
    caller and keyed ``kubeconfig``/``ca``/``cert``/``key``/``token``."""
    secrets = secrets or {}
    kubeconfig = _decode(spec.get("kubeconfig"), what="kubeconfig") or secrets.get("kubeconfig")
    if kubeconfig:
        return access_from_kubeconfig(kubeconfig, allow_http_credentials=allow_http_credentials)
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
    headers = {"Authorization": f"Bearer {_header_text(token, what='token')}"} if token else {}
    server = _server(str(spec["apiserver"]))
    return MemberAccess(
        server=server,
        ssl_context=ssl_context,
        headers=headers,
        insecure=insecure,
        warnings=_check_transport(
            server, credentials=bool(headers), allow_http_credentials=allow_http_credentials
        ),
    )
