"""The host cluster every e2e test uses: a kube-apiserver with the aggregation layer's
front-proxy flags, the CRDs of manifests/crds established, the peering object and the
clusterpedia-system namespace in place (tests/integration shares it by name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterpedia.testing.controlplane import APIServer, ControlPlane

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


@pytest.fixture(scope="session")
def host(control_plane: ControlPlane) -> APIServer:
    server = control_plane.apiservers.get("aggregator") or control_plane.add_apiserver(
        "aggregator", front_proxy=True
    )
    server.kubectl("apply", "-k", str(MANIFESTS / "crds"))
    server.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd", "--all")
    server.kubectl("apply", "-f", str(MANIFESTS / "base" / "peering.yaml"))
    server.kubectl("create", "namespace", "clusterpedia-system", check=False)
    return server
