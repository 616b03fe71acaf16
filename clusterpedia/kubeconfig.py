"""``clusterpedia kubeconfig``: kubeconfig cluster entries that point kubectl at Clusterpedia.

As the original's ``hack/gen-clusterconfigs.sh``: from the current context's cluster, add
``clusterpedia`` (every cluster at once) and one entry per PediaCluster, each with the server
URL of the aggregated API under the host's own URL and the host's CA settings. kubectl's
``--cluster <name>`` then reuses the current user's credentials against the host, which
proxies to Clusterpedia: ``kubectl --cluster clusterpedia get pods -A``.

Entries use the long-running layout (``paths.py``), so the host does not cut ``exec``,
``logs -f`` or ``get -w`` after its ``--request-timeout``; ``original_paths`` writes the
original's layout instead (users then need no ``proxy`` verb in the host's RBAC).

A cluster entry that already exists and does not point at Clusterpedia is left alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from clusterpedia.kube.client import KubeClient
from clusterpedia.kube.host import host_access
from clusterpedia.paths import LONG_RUNNING_PATH, RESOURCES_PATH

_COPIED = (
    "certificate-authority-data",
    "certificate-authority",
    "insecure-skip-tls-verify",
    "tls-server-name",
    "proxy-url",
)


class KubeconfigError(ValueError):
    """The kubeconfig has no usable current context."""


def current_cluster(config: dict[str, Any]) -> dict[str, Any]:
    contexts = {c["name"]: c.get("context") or {} for c in config.get("contexts") or []}
    context = contexts.get(config.get("current-context") or "")
    if context is None:
        raise KubeconfigError("the kubeconfig has no current context")
    clusters = {c["name"]: c.get("cluster") or {} for c in config.get("clusters") or []}
    cluster = clusters.get(context.get("cluster") or "")
    if not cluster or not cluster.get("server"):
        raise KubeconfigError(
            f"the current context's cluster {context.get('cluster')!r} has no server"
        )
    return cluster


def _ours(server: str) -> bool:
    return RESOURCES_PATH in server or LONG_RUNNING_PATH in server


def add_clusterpedia_clusters(
    config: dict[str, Any], names: Sequence[str], *, original_paths: bool = False
) -> tuple[list[str], list[str]]:
    """Add or update the entries; returns (written, skipped) cluster names."""
    host = current_cluster(config)
    base = host["server"].rstrip("/") + (RESOURCES_PATH if original_paths else LONG_RUNNING_PATH)
    wanted = {"clusterpedia": base} | {name: f"{base}/clusters/{name}" for name in names}
    entries = config.setdefault("clusters", [])
    existing = {entry["name"]: entry for entry in entries}
    written, skipped = [], []
    for name, server in wanted.items():
        body = {"server": server} | {k: host[k] for k in _COPIED if k in host}
        entry = existing.get(name)
        if entry is None:
            entries.append({"name": name, "cluster": body})
        elif _ours(str((entry.get("cluster") or {}).get("server", ""))):
            entry["cluster"] = body
        else:
            skipped.append(name)
            continue
        written.append(name)
    return written, skipped


async def pediacluster_names(kubeconfig: str | None) -> list[str]:
    async with KubeClient(host_access(kubeconfig)) as client:
        found = await client.get("/apis/cluster.clusterpedia.io/v1alpha2/pediaclusters")
    return sorted(item["metadata"]["name"] for item in found.get("items") or [])


def generate(
    kubeconfig: Path, *, output: Path | None = None, original_paths: bool = False
) -> tuple[list[str], list[str]]:
    """Read ``kubeconfig``, list the host's PediaClusters, write the result to ``output``
    (default: back to ``kubeconfig``)."""
    config = yaml.safe_load(kubeconfig.read_text()) or {}
    names = asyncio.run(pediacluster_names(str(kubeconfig)))
    written, skipped = add_clusterpedia_clusters(config, names, original_paths=original_paths)
    target = output or kubeconfig
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    target.chmod(0o600)
    return written, skipped
