"""Access to the host cluster (where PediaClusters live) for our own requests.

The same rule Kopf's login and kubectl follow: ``$KUBECONFIG`` (or an explicit path), then
``~/.kube/config``, then the in-cluster service account. Unlike a PediaCluster's kubeconfig,
this one belongs to our own machine, so file references in it are read.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from clusterpedia.kube.access import InvalidClusterConfig, MemberAccess, access_from_kubeconfig

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


def host_access(kubeconfig: str | None = None) -> MemberAccess:
    """The host cluster's access; raises :class:`InvalidClusterConfig` if none is found."""
    candidates = [kubeconfig, os.environ.get("KUBECONFIG"), str(Path.home() / ".kube" / "config")]
    for candidate in candidates:
        if candidate and Path(candidate.split(os.pathsep)[0]).is_file():
            path = Path(candidate.split(os.pathsep)[0])
            config = _inline_files(yaml.safe_load(path.read_text()) or {}, path.parent)
            return access_from_kubeconfig(yaml.safe_dump(config).encode())
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
        return access_from_kubeconfig(yaml.safe_dump(config).encode())
    raise InvalidClusterConfig(
        "no host cluster access: set --kubeconfig or KUBECONFIG, or run inside a cluster"
    )
