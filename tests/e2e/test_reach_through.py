"""Reach through to a member, with the real kubectl through the host's aggregation layer: a
member kube-apiserver whose node and pod kwok simulates (so the member serves their logs and
exec), synced by ``clusterpedia run``; kubectl with the entries ``clusterpedia kubeconfig``
writes then runs ``logs``, ``logs -f``, ``exec`` and ``exec -i`` against the member, as the
requesting user: a user the member does not allow gets the member's 403.

The host cuts requests after 10 s (``--request-timeout``): an exec session, a ``logs -f`` and a
``kubectl get -w`` through the long-running layout outlive that and still carry what comes
later; a ``logs -f`` through the original's layout is cut, which is why the layout exists.
(The host lets an upgraded connection, an exec session, run on in either layout.)"""

from __future__ import annotations

import re
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from clusterpedia.apiserver.testing import register_apiservice
from clusterpedia.kubeconfig import add_clusterpedia_clusters
from clusterpedia.testing.aggregation import service_account_token
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.kwok import KWOK_MEMBER_ARGS, KwokNodes
from clusterpedia.testing.objects import pediacluster
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually

CLUSTER = "kwok-1"
NAMESPACE = "reach"
REQUEST_TIMEOUT = 10  # the host's --request-timeout, seconds
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


@pytest.fixture(scope="module")
def host(control_plane: ControlPlane) -> APIServer:
    """A host of its own, whose aggregation layer cuts requests after REQUEST_TIMEOUT."""
    server = control_plane.apiservers.get("reach-host") or control_plane.add_apiserver(
        "reach-host", front_proxy=True, extra_args=(f"--request-timeout={REQUEST_TIMEOUT}s",)
    )
    server.kubectl("apply", "-k", str(MANIFESTS / "crds"))
    server.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd", "--all")
    server.kubectl("create", "namespace", "clusterpedia-system", check=False)
    return server


class EchoServer(socketserver.ThreadingTCPServer):
    """What the simulated pod's port 80 forwards to: every byte back, on loopback."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        class Echo(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                while data := self.request.recv(65536):
                    self.request.sendall(data)

        super().__init__(("127.0.0.1", 0), Echo)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def kwok_member(control_plane: ControlPlane) -> Iterator[tuple[APIServer, KwokNodes]]:
    member = control_plane.apiservers.get("kwok-member") or control_plane.add_apiserver(
        "kwok-member", extra_args=KWOK_MEMBER_ARGS
    )
    echo = EchoServer()
    nodes = KwokNodes(member, forward_to=echo.port).start()
    try:
        nodes.add_node("node-0")
        member.kubectl("create", "namespace", NAMESPACE, check=False)
        nodes.write_log("line one")
        nodes.add_pod("web-0", namespace=NAMESPACE, node="node-0", app="web")
        yield member, nodes
    finally:
        nodes.stop()
        echo.shutdown()
        echo.server_close()


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


def kubeconfig_for(
    host: APIServer, path: Path, *, token: str | None = None, original_paths: bool = False
) -> Path:
    """The host's kubeconfig pointed at the member through Clusterpedia, the server URL as
    ``clusterpedia kubeconfig`` writes it."""
    config = host.kubeconfig_dict()
    add_clusterpedia_clusters(config, [CLUSTER], original_paths=original_paths)
    server = next(c for c in config["clusters"] if c["name"] == CLUSTER)["cluster"]["server"]
    config["clusters"][0]["cluster"]["server"] = server
    if token is not None:
        config["users"][0]["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return path


def kubectl(
    host: APIServer, kubeconfig: Path, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(host.assets.kubectl), f"--kubeconfig={kubeconfig}", "-n", NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=input,
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


def follow(host: APIServer, kubeconfig: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(host.assets.kubectl), f"--kubeconfig={kubeconfig}", "-n", NAMESPACE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sessions_outlive_the_hosts_request_timeout(
    host: APIServer, through: Path, kwok_member: tuple[APIServer, KwokNodes], tmp_path: Path
) -> None:
    seconds = REQUEST_TIMEOUT + 4
    done = kubectl(host, through, "exec", "web-0", "--", "sh", "-c", f"sleep {seconds}; echo on")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "on\n"

    member, nodes = kwok_member
    original = kubeconfig_for(host, tmp_path / "original.kubeconfig", original_paths=True)
    with (
        follow(host, through, "logs", "-f", "web-0") as logs,
        follow(host, through, "get", "pods", "-w", "--output-watch-events") as watch,
        follow(host, original, "logs", "-f", "web-0") as cut,
    ):
        try:
            time.sleep(seconds)
            # The original's layout is a get of resources to the host: cut at its timeout.
            assert cut.wait(timeout=30) is not None
            assert logs.poll() is None and watch.poll() is None
            nodes.write_log("after the host's timeout")
            nodes.add_pod("late-0", namespace=NAMESPACE, node="node-0", app="web")
            for process, expected in ((logs, "after the host's timeout"), (watch, "late-0")):
                assert process.stdout is not None
                while expected not in (line := process.stdout.readline()):
                    assert line, f"the stream ended before {expected!r}"
        finally:
            for process in (logs, watch, cut):
                process.terminate()
            member.kubectl("delete", "pod", "late-0", "-n", NAMESPACE, "--wait=false", check=False)


def test_port_forward_carries_bytes_both_ways(host: APIServer, through: Path) -> None:
    with follow(host, through, "port-forward", "pod/web-0", ":80") as forward:
        try:
            assert forward.stdout is not None
            line = forward.stdout.readline()
            match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> 80", line)
            assert match, line
            for payload in (b"ping", b"x" * 100_000):
                with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=20) as c:
                    c.sendall(payload)
                    received = b""
                    while len(received) < len(payload):
                        chunk = c.recv(65536)
                        assert chunk, "the forwarded connection closed early"
                        received += chunk
                    assert received == payload
        finally:
            forward.terminate()
