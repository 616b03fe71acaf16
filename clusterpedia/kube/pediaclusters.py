"""What a PediaCluster's spec refers to in the host: the Secrets of ``authenticationFrom``, read
from one namespace only, by names checked before they go into a path. Used by the operator
(to sync) and the API server (to reach through to the member)."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from clusterpedia.kube.access import InvalidClusterConfig
from clusterpedia.kube.client import KubeClient, KubeError

SECRET_PURPOSES = ("kubeconfig", "ca", "cert", "key", "token")  # authenticationFrom keys


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def object_name(value: Any, *, what: str) -> str:
    """A name that goes into a host path: a DNS subdomain (no ``/``, ``..`` or ``%``), so a
    spec can name only an object of the kind and namespace the path was built for."""
    if not isinstance(value, str) or len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise InvalidClusterConfig(f"{what} {str(value)[:80]!r} is not a valid object name")
    return value


def host_path(*parts: str) -> str:
    """A host API path from parts that were validated, each quoted as one segment anyway; a
    dot segment, which a URL library would resolve into another path, is refused even so."""
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidClusterConfig(f"{'/'.join(parts)!r} holds an empty or dot path segment")
    return "/" + "/".join(quote(part, safe="") for part in parts)


async def authentication_secrets(
    host: KubeClient, namespace: str, spec: Mapping[str, Any]
) -> dict[str, bytes]:
    """Values of ``authenticationFrom`` references, from Secrets in ``namespace`` only."""
    found: dict[str, bytes] = {}
    references = spec.get("authenticationFrom") or {}
    if not isinstance(references, Mapping):
        raise InvalidClusterConfig("authenticationFrom must be a mapping")
    for purpose, reference in references.items():
        if purpose not in SECRET_PURPOSES:
            raise InvalidClusterConfig(
                f"authenticationFrom.{purpose}: use one of {', '.join(SECRET_PURPOSES)}"
            )
        if not isinstance(reference, Mapping):
            raise InvalidClusterConfig(f"authenticationFrom.{purpose} needs a name and a key")
        name = object_name(reference.get("name"), what=f"authenticationFrom.{purpose}.name")
        key = reference.get("key")
        if not isinstance(key, str) or len(key) > 253 or not _SECRET_KEY.fullmatch(key):
            raise InvalidClusterConfig(
                f"authenticationFrom.{purpose}.key {str(key)[:80]!r} is not a valid Secret key"
            )
        path = host_path("api", "v1", "namespaces", namespace, "secrets", name)
        try:
            secret = await host.get(path)
        except KubeError as error:
            raise InvalidClusterConfig(f"authenticationFrom.{purpose}: {error}") from None
        value = (secret.get("data") or {}).get(key)
        if not isinstance(value, str):
            raise InvalidClusterConfig(
                f"authenticationFrom.{purpose}: secret {name} has no key {key!r}"
            )
        try:
            found[purpose] = base64.b64decode(value, validate=True)
        except ValueError:
            raise InvalidClusterConfig(
                f"authenticationFrom.{purpose}: secret {name} key {key!r} is not base64"
            ) from None
    return found
