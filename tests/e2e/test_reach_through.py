"""Reach through to a member, with the real kubectl through the host's aggregation layer: a
member kube-apiserver whose node and pod kwok simulates (so the member serves their logs and
exec), synced by ``clusterpedia run``; ``kubectl --server .../clusters/<name>`` then runs
``logs``, ``logs -f``, ``exec`` and ``exec -i`` against the member, as the requesting user:
a user the member does not allow gets the member's 403."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from clusterpedia.apiserver.testing import register_apiservice
from clusterpedia.testing.aggregation import service_account_token
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.kwok import KWOK_MEMBER_ARGS, KwokNodes
from clusterpedia.testing.objects import pediacluster
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually

CLUSTER = "kwok-1"
NAMESPACE = "reach"


@pytest.fixture(scope="module")
def kwok_member(control_plane: ControlPlane) -> Iterator[tuple[APIServer, KwokNodes]]:
    member = control_plane.apiservers.get("kwok-member") or control_plane.add_apiserver(
        "kwok-member", extra_args=KWOK_MEMBER_ARGS
    )
    nodes = KwokNodes(member).start()
    try:
        nodes.add_node("node-0")
        member.kubectl("create", "namespace", NAMESPACE, check=False)
        nodes.write_log("line one")
        nodes.add_pod("web-0", namespace=NAMESPACE, node="node-0", app="web")
        yield member, nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def product(
    host: APIServer,
    kwok_member: tuple[APIServer, KwokNodes],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProductProcess]:
    member, _ = kwok_member
    workdir = tmp_path_factory.mktemp("reach")
    running = ProductProcess(
        workdir=workdir, kubeconfig=host.kubeconfig, storage_url=f"sqlite:///{workdir / 'db'}"
    ).start()
    try:
        register_apiservice(host, port=running.port, ca_pem=running.ca_pem)
        spec = pediacluster(
            CLUSTER, member.kubeconfig.read_bytes(), {"group": "", "resources": ["pods"]}
        )
        host.kubectl("apply", "-f", "-", input=yaml.safe_dump(spec))
        yield running
    finally:
        host.kubectl("delete", "pediacluster", CLUSTER, "--timeout=60s", check=False)
        running.stop()


def kubeconfig_for(host: APIServer, path: Path, *, token: str | None = None) -> Path:
    """The host's kubeconfig pointed at the member's path through Clusterpedia, as
    ``clusterpedia kubeconfig`` writes its per-cluster entries."""
    config = host.kubeconfig_dict()
    config["clusters"][0]["cluster"]["server"] = (
        f"{host.url}/apis/clusterpedia.io/v1beta1/resources/clusters/{CLUSTER}"
    )
    if token is not None:
        config["users"][0]["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return path


def kubectl(
    host: APIServer, kubeconfig: Path, *args: str, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(host.assets.kubectl), f"--kubeconfig={kubeconfig}", "-n", NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.fixture(scope="module")
def through(
    host: APIServer, product: ProductProcess, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = kubeconfig_for(host, tmp_path_factory.mktemp("kubeconfig") / "member.kubeconfig")
    eventually(
        lambda: "web-0" in kubectl(host, path, "get", "pods").stdout,
        timeout=90,
        what="the pod synced and served through the host",
    )
    return path


def test_logs_and_a_followed_log(
    host: APIServer, through: Path, kwok_member: tuple[APIServer, KwokNodes]
) -> None:
    _, nodes = kwok_member
    done = kubectl(host, through, "logs", "web-0")
    assert done.returncode == 0, done.stderr
    assert "line one" in done.stdout
    with subprocess.Popen(
        [
            str(host.assets.kubectl),
            f"--kubeconfig={through}",
            "-n",
            NAMESPACE,
            "logs",
            "-f",
            "web-0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as follow:
        try:
            assert follow.stdout is not None
            assert "line one" in follow.stdout.readline()
            time.sleep(1)
            nodes.write_log("written later")
            assert "written later" in follow.stdout.readline()  # it arrives while following
        finally:
            follow.terminate()


def test_exec_with_and_without_stdin(host: APIServer, through: Path) -> None:
    done = kubectl(host, through, "exec", "web-0", "--", "echo", "hi")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hi\n"
    # head, not cat: kwok does not pass the end of stdin on (kubectl against the member
    # itself waits for ever too), so the command must end by itself.
    piped = kubectl(
        host, through, "exec", "-i", "web-0", "--", "head", "-n", "2", input="ping\npong\n"
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "ping\npong\n"


def test_the_member_decides_as_the_requesting_user(
    host: APIServer, through: Path, tmp_path: Path
) -> None:
    """A user who may read through Clusterpedia, but whom the member does not know: the
    member's answer (403), not the PediaCluster's rights."""
    token = service_account_token(host, "reach-reader", reader=True)
    kubeconfig = kubeconfig_for(host, tmp_path / "reader.kubeconfig", token=token)
    listed = kubectl(host, kubeconfig, "get", "pods")
    assert listed.returncode == 0 and "web-0" in listed.stdout, listed.stderr
    for command in (["logs", "web-0"], ["exec", "web-0", "--", "echo", "hi"]):
        done = kubectl(host, kubeconfig, *command)
        assert done.returncode != 0, command
        assert "forbidden" in done.stderr.lower() or "403" in done.stderr, done.stderr
