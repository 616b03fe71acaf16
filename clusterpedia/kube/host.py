"""Access to the host cluster (where PediaClusters live): one provider for our own client and
for Kopf's login, so both always talk to the same server as the same identity.

The rule kubectl follows: ``$KUBECONFIG`` (or an explicit path), then ``~/.kube/config``, then
the in-cluster service account. Unlike a PediaCluster's kubeconfig, this one belongs to our
own machine, so file references in it are read.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from clusterpedia.kube.access import (
    InvalidClusterConfig,
    MemberAccess,
    access_from_kubeconfig,
    current_context,
)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_FILE_FIELDS = {
    "certificate-authority": "certificate-authority-data",
    "client-certificate": "client-certificate-data",
    "client-key": "client-key-data",
}


def _inline_files(config: dict, base: Path) -> dict:  # type: ignore[type-arg]
    for section, key in (("clusters", "cluster"), ("users", "user")):
        for entry in config.get(section) or []:
            body = entry.get(key) or {}
            for file_field, data_field in _FILE_FIELDS.items():
                if file_field in body:
                    path = Path(body.pop(file_field))
                    path = path if path.is_absolute() else base / path
                    body[data_field] = base64.b64encode(path.read_bytes()).decode()
            if "tokenFile" in body:
                body["token"] = Path(body.pop("tokenFile")).read_text().strip()
    return config


@dataclass(frozen=True)
class HostCredentials:
    """The host's server and identity as data (what Kopf's ``ConnectionInfo`` takes)."""

    server: str
    ca_data: bytes | None
    insecure: bool
    certificate_data: bytes | None
    private_key_data: bytes | None
    token: str | None
    username: str | None
    password: str | None


def _data(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value else None


def host_credentials(kubeconfig: str | None = None) -> HostCredentials:
    """The host's credentials; raises :class:`InvalidClusterConfig` if none are found."""
    config = _host_config(kubeconfig)
    access = access_from_kubeconfig(yaml.safe_dump(config).encode())  # validates it all
    cluster, user = current_context(config)
    return HostCredentials(
        server=access.server,
        ca_data=_data(cluster.get("certificate-authority-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        certificate_data=_data(user.get("client-certificate-data")),
        private_key_data=_data(user.get("client-key-data")),
        token=user.get("token") or None,
        username=user.get("username") or None,
        password=user.get("password") or None,
    )


def host_access(kubeconfig: str | None = None) -> MemberAccess:
    """The host cluster's access for our own client."""
    return access_from_kubeconfig(yaml.safe_dump(_host_config(kubeconfig)).encode())


def _host_config(kubeconfig: str | None) -> dict:  # type: ignore[type-arg]
    if kubeconfig and not Path(kubeconfig).is_file():
        raise InvalidClusterConfig(f"--kubeconfig {kubeconfig}: no such file")
    candidates = [kubeconfig, os.environ.get("KUBECONFIG"), str(Path.home() / ".kube" / "config")]
    for candidate in candidates:
        if candidate and Path(candidate.split(os.pathsep)[0]).is_file():
            path = Path(candidate.split(os.pathsep)[0])
            return _inline_files(yaml.safe_load(path.read_text()) or {}, path.parent)
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    if host and port and (SERVICE_ACCOUNT / "token").is_file():
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        config = {
            "current-context": "in-cluster",
            "contexts": [{"name": "in-cluster", "context": {"cluster": "c", "user": "u"}}],
            "clusters": [
                {
                    "name": "c",
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": base64.b64encode(
                            (SERVICE_ACCOUNT / "ca.crt").read_bytes()
                        ).decode(),
                    },
                }
            ],
            "users": [
                {"name": "u", "user": {"token": (SERVICE_ACCOUNT / "token").read_text().strip()}}
            ],
        }
        return config
    raise InvalidClusterConfig(
        "no host cluster access: set --kubeconfig or KUBECONFIG, or run inside a cluster"
    )
