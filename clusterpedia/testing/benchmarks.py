"""Helpers the benchmarks in bench/ share."""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import time
from pathlib import Path

from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.product import ProductProcess

CRDS = Path(__file__).resolve().parents[1] / "crds"  # packaged copies of manifests/crds


def operator_host(plane: ControlPlane, *, front_proxy: bool = False) -> APIServer:
    """A host kube-apiserver with the CRDs of manifests/crds established."""
    host = plane.add_apiserver("bench-host", front_proxy=front_proxy)
    host.kubectl("apply", "-f", str(CRDS))
    host.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd", "--all")
    return host


def quiet_product(host: APIServer, storage_url: str, label: str) -> ProductProcess:
    """``clusterpedia run`` for a benchmark: its own process, a fresh workdir, warnings only."""
    return ProductProcess(
        workdir=Path(tempfile.mkdtemp(prefix=f"bench-{label}-")),
        kubeconfig=host.kubeconfig,
        storage_url=storage_url,
        extra_args=("--log-level=WARNING",),
    ).start()


def benchmark_parser(description: str | None) -> argparse.ArgumentParser:
    """The options every benchmark has: ``--database`` and ``--json``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database", default="postgresql", choices=["sqlite", "postgresql", "mysql"]
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )
    return parser


def print_figures(rows: list[tuple[str, str, str]], figures: dict[str, float]) -> None:
    """One line per (key, label, format) row: the label, then the figure right-aligned."""
    width = max(len(label) for _, label, _ in rows)
    for key, label, fmt in rows:
        print(f"{label:{width}}  {fmt.format(figures[key]):>10}")


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid``, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def wait_operator_ready(host: APIServer, timeout: float = 60) -> None:
    """Wait until the operator reconciles PediaClusters (a probe with an unusable spec gets
    its conditions), as it long has when a user applies one; then remove the probe."""
    probe = {
        "apiVersion": "cluster.clusterpedia.io/v1alpha2",
        "kind": "PediaCluster",
        "metadata": {"name": "readiness-probe"},
        "spec": {
            "kubeconfig": base64.b64encode(b"not a kubeconfig").decode(),
            "syncResources": [],
        },
    }
    host.kubectl("apply", "-f", "-", input=json.dumps(probe))
    deadline = time.monotonic() + timeout
    while (
        "Validated"
        not in host.kubectl(
            "get", "pediacluster", "readiness-probe", "-o", "jsonpath={.status.conditions[*].type}"
        ).stdout
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("the operator did not reconcile a PediaCluster")
        time.sleep(0.2)
    host.kubectl("delete", "pediacluster", "readiness-probe", "--timeout=60s")
