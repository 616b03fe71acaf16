"""The control-plane harness drives real kube-apiserver, etcd and kubectl processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import kubernetes
import pytest

from clusterpedia.testing.assets import Assets
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.processes import pid_alive

OBJECTS = """
apiVersion: v1
kind: Namespace
metadata:
  name: harness
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: harness
data:
  cluster: {cluster}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: harness
  labels: {{app: web}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
"""


def python_client(server: APIServer) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(server.kubeconfig))


def test_kubectl_apply_then_list_with_the_python_client(member_clusters: list[APIServer]) -> None:
    for server in member_clusters:
        applied = server.kubectl("apply", "-f", "-", input=OBJECTS.format(cluster=server.name))
        assert "deployment.apps/web created" in applied.stdout

    for server in member_clusters:
        with python_client(server) as api:
            config_maps = kubernetes.client.CoreV1Api(api).list_namespaced_config_map("harness")
            deployments = kubernetes.client.AppsV1Api(api).list_namespaced_deployment("harness")
        settings = [item for item in config_maps.items if item.metadata.name == "settings"]
        assert [item.data for item in settings] == [{"cluster": server.name}]
        assert [(d.metadata.name, d.spec.replicas) for d in deployments.items] == [("web", 2)]


def test_watch_sees_an_update_made_with_kubectl(member_clusters: list[APIServer]) -> None:
    server = member_clusters[0]
    server.kubectl("create", "namespace", "watching")
    server.kubectl("create", "configmap", "flag", "-n", "watching", "--from-literal=state=old")
    with python_client(server) as api:
        core = kubernetes.client.CoreV1Api(api)
        listed = core.list_namespaced_config_map("watching")
        patch = json.dumps({"data": {"state": "new"}})
        server.kubectl("patch", "configmap", "flag", "-n", "watching", "-p", patch)
        stream = kubernetes.watch.Watch().stream(
            core.list_namespaced_config_map,
            namespace="watching",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=30,
        )
        event = next(stream)
    assert event["type"] == "MODIFIED"
    assert event["object"].data == {"state": "new"}


def test_members_are_separate_clusters(member_clusters: list[APIServer]) -> None:
    first, second = member_clusters
    first.kubectl("create", "namespace", "only-in-first")
    missing = second.kubectl("get", "namespace", "only-in-first", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr
    version = json.loads(first.get("/version"))
    assert version["gitVersion"].startswith("v1.")


def test_adding_an_apiserver_keeps_etcd_and_existing_servers(
    control_plane: ControlPlane, member_clusters: list[APIServer]
) -> None:
    etcd_pid = control_plane.etcd.pid
    member_clusters[0].kubectl("create", "namespace", "before-third")
    third = control_plane.add_apiserver("member-3")
    try:
        assert control_plane.etcd.pid == etcd_pid and etcd_pid is not None and pid_alive(etcd_pid)
        assert member_clusters[0].kubectl("get", "namespace", "before-third").returncode == 0
        assert third.kubectl("get", "namespaces", "-o", "name").stdout.count("namespace/") >= 1
    finally:
        third.stop()


def test_restarted_apiserver_keeps_its_url_and_data(control_plane: ControlPlane) -> None:
    server = control_plane.add_apiserver("restarting")
    try:
        server.kubectl("create", "namespace", "survives")
        url = server.url
        server.stop()
        assert not server.running()
        server.start()
        assert server.url == url
        assert server.kubectl("get", "namespace", "survives").returncode == 0
    finally:
        server.stop()


def test_stop_leaves_no_process_even_after_an_error(assets: Assets) -> None:
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="boom"), ControlPlane(assets=assets) as plane:
        plane.add_apiserver("doomed")
        pids = plane.pids()
        raise RuntimeError("boom")
    assert len(pids) == 2
    assert [pid for pid in pids if pid_alive(pid)] == []


def test_killing_the_harness_owner_kills_its_processes(assets: Assets, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from clusterpedia.testing.assets import Assets
        from clusterpedia.testing.controlplane import ControlPlane
        assets = Assets(
            kube_apiserver=Path({str(assets.kube_apiserver)!r}),
            etcd=Path({str(assets.etcd)!r}),
            kubectl=Path({str(assets.kubectl)!r}),
        )
        plane = ControlPlane(assets=assets, workdir=Path({str(tmp_path)!r})).start()
        print(plane.etcd.pid, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        etcd_pid = int(owner.stdout.readline())
        assert pid_alive(etcd_pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 10
        while pid_alive(etcd_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(etcd_pid), "etcd outlived the SIGKILLed process that started it"
    finally:
        owner.kill()
        owner.wait()
