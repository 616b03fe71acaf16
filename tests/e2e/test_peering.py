"""Two replicas on one database: Kopf peering keeps exactly one syncing, both serve, and the
standby takes over when the active one stops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml

from clusterpedia.apiserver.testing import PREFIX
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.databases import fresh_database, require_server
from clusterpedia.testing.objects import configmaps_of, pediacluster
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually

CLUSTER = "peered"
SYNC_STARTED = f"cluster {CLUSTER}: sync started"


def fetch(process: ProductProcess, host: APIServer, path: str) -> dict[str, Any]:
    """GET as the host's aggregation layer would send it."""
    return orjson.loads(process.get_as_front_proxy(host, path))  # type: ignore[no-any-return]


def test_one_replica_syncs_both_serve_and_the_standby_takes_over(
    host: APIServer,
    member_clusters: list[APIServer],
    tmp_path: Path,
) -> None:
    require_server("postgresql")
    member = member_clusters[0]
    member.kubectl("create", "namespace", "peering", check=False)
    member.kubectl(
        "create", "configmap", "shared", "-n", "peering", "--from-literal=a=1", check=False
    )
    with fresh_database("postgresql", label="peering") as url:
        replicas = [
            ProductProcess(
                workdir=tmp_path / name,
                kubeconfig=host.kubeconfig,
                storage_url=url,
                extra_args=("--peering", f"--priority={priority}"),
                name=name,
            ).start()
            for name, priority in (("replica-low", 10), ("replica-high", 20))
        ]
        low, high = replicas
        try:
            # Both start alone, each active until it sees the other: the lower priority one
            # pauses once high's keep-alive reaches it (Kopf logs it). Only then is "exactly
            # one syncs" the steady state to check.
            eventually(
                lambda: "Pausing operations in favour of" in low.log(),
                timeout=60,
                what="the lower-priority replica pauses",
            )
            cluster = pediacluster(
                CLUSTER,
                member.kubeconfig.read_bytes(),
                configmaps_of("peering"),
            )
            host.kubectl("apply", "-f", "-", input=yaml.safe_dump(cluster))
            path = f"{PREFIX}/clusters/{CLUSTER}/api/v1/namespaces/peering/configmaps"

            def served_by_both() -> bool:
                try:
                    return all(
                        [i["metadata"]["name"] for i in fetch(p, host, path)["items"]] == ["shared"]
                        for p in replicas
                    )
                except OSError:
                    return False

            eventually(served_by_both, timeout=60, what="both replicas serve the synced ConfigMap")
            assert SYNC_STARTED in high.log() and SYNC_STARTED not in low.log()

            assert high.stop() == 0
            eventually(lambda: SYNC_STARTED in low.log(), timeout=90, what="the standby takes over")
            member.kubectl(
                "create", "configmap", "after-failover", "-n", "peering", "--from-literal=b=2"
            )
            eventually(
                lambda: len(fetch(low, host, path)["items"]) == 2,
                timeout=60,
                what="the new active replica syncs new objects",
            )
        finally:
            # Removed while a replica still runs (its finalizer needs the operator), so no
            # other test's operator finds it.
            host.kubectl("delete", "pediacluster", CLUSTER, "--timeout=60s", check=False)
            for replica in replicas:
                replica.stop()
