"""Reach through to a member, with the real kubectl through the host's aggregation layer: a
member kube-apiserver whose node and pod kwok simulates (so the member serves their logs and
exec), synced by ``clusterpedia run``; kubectl with the entries ``clusterpedia kubeconfig``
writes then runs ``logs``, ``logs -f``, ``exec``, ``exec -i``, ``attach`` and ``port-forward``
against the member, as the requesting user: a user the member does not allow gets the
member's 403. A ``get`` of a type the cluster does not sync, a list with ``forward``, and any
member path under ``proxy/`` are answered by the member; a subresource the policy does not
allow is refused; the PediaCluster-credentials mode acts with the PediaCluster's rights and
says so in its log. A member that goes down mid-exec ends the session, and nothing is left
open (``clusterpedia_reach_open``, the event loop's tasks).

The host cuts requests after 10 s (``--request-timeout``): an exec session, a ``logs -f`` and a
``kubectl get -w`` through the long-running layout outlive that and still carry what comes
later; a ``logs -f`` through the original's layout is cut, which is why the layout exists.
(The host lets an upgraded connection, an exec session, run on in either layout.)"""

from __future__ import annotations

import base64
import http.client
import json
import re
import selectors
import socket
import socketserver
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from clusterpedia.apiserver.testing import register_apiservice
from clusterpedia.kubeconfig import add_clusterpedia_clusters
from clusterpedia.testing.aggregation import service_account_token
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.faults import SilentMember, TcpProxy
from clusterpedia.testing.kwok import KWOK_MEMBER_ARGS, KwokNodes
from clusterpedia.testing.objects import pediacluster
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually

CLUSTER = "kwok-1"
CUT = "kwok-cut"  # the same member, through a proxy the test can cut
NAMESPACE = "reach"
REQUEST_TIMEOUT = 10  # the host's --request-timeout, seconds
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
SUBRESOURCES = "pods/log,pods/exec,pods/attach,pods/portforward,nodes/proxy"  # no pods/proxy


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
        # The host's admin reaches the member as user "admin" (its system:masters group is
        # not passed on): the member grants that name explicitly.
        member.kubectl(
            "create", "clusterrolebinding", "reach-host-admin", "--clusterrole=cluster-admin",
            "--user=admin", check=False,
        )  # fmt: skip
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
        workdir=workdir,
        kubeconfig=host.kubeconfig,
        storage_url=f"sqlite:///{workdir / 'db'}",
        extra_args=(
            f"--allowed-proxy-subresources={SUBRESOURCES}",
            "--allow-forward-unsync-resource-request",
            "--enable-proxy-path-for-forward-request",
        ),
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


def serving_only(host: APIServer, tmp_path: Path, name: str, *flags: str) -> ProductProcess:
    """A second ``clusterpedia run`` that only serves (``--no-operator``: the module's product
    syncs), with ``flags``, on a database of its own."""
    return ProductProcess(
        workdir=tmp_path / name,
        kubeconfig=host.kubeconfig,
        storage_url=f"sqlite:///{tmp_path / f'{name}.db'}",
        extra_args=("--no-operator", *flags),
        name=name,
    ).start()


def kubeconfig_for(
    host: APIServer,
    path: Path,
    *,
    token: str | None = None,
    original_paths: bool = False,
    cluster: str = CLUSTER,
) -> Path:
    """The host's kubeconfig pointed at the member through Clusterpedia, the server URL as
    ``clusterpedia kubeconfig`` writes it."""
    config = host.kubeconfig_dict()
    add_clusterpedia_clusters(config, [cluster], original_paths=original_paths)
    server = next(c for c in config["clusters"] if c["name"] == cluster)["cluster"]["server"]
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
    wait_until_stored(host, path, what="the pod synced and served through the host")
    return path


def wait_until_stored(host: APIServer, kubeconfig: Path, *, what: str) -> None:
    """Until pods are synced, the member answers for them (unsynced types are forwarded):
    wait for the stored pod, which carries the cluster annotation."""
    eventually(
        lambda: (
            "shadow.clusterpedia.io/cluster-name"
            in kubectl(host, kubeconfig, "get", "pods", "-o", "yaml").stdout
        ),
        timeout=90,
        what=what,
    )


def test_logs_and_a_followed_log(
    host: APIServer, through: Path, kwok_member: tuple[APIServer, KwokNodes]
) -> None:
    _, nodes = kwok_member
    done = kubectl(host, through, "logs", "web-0")
    assert done.returncode == 0, done.stderr
    assert "line one" in done.stdout
    missing = kubectl(
        host, through, "get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/nope/log"
    )
    assert 'pods "nope" not found' in missing.stderr  # the member's own 404, passed through
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


LOG_PATH = (
    f"/apis/clusterpedia.io/v1beta1/resources/clusters/{CLUSTER}/api/v1/namespaces/"
    f"{NAMESPACE}/pods/web-0/log"
)


def as_front_proxy(
    server: ProductProcess, host: APIServer, path: str, *, user: str, groups: list[str]
) -> tuple[int, bytes]:
    """GET ``path`` from ``server`` as ``host``'s aggregation layer sends ``user`` (one
    ``X-Remote-Group`` header per group, as the front proxy sends them)."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=server.front_proxy_context(host), timeout=20
    )
    try:
        connection.putrequest("GET", path)
        connection.putheader("X-Remote-User", user)
        for group in groups:
            connection.putheader("X-Remote-Group", group)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def granted(
    server: ProductProcess, host: APIServer, *, user: str, groups: list[str]
) -> bytes | None:
    """The log, once the member lets ``user`` read it (None while it does not)."""
    status, body = as_front_proxy(server, host, LOG_PATH, user=user, groups=groups)
    return body if status == 200 else None


def member_grants_log(member: APIServer, name: str, subject: str) -> None:
    """On the member: ``subject`` may read pods and their logs."""
    member.kubectl(
        "create", "clusterrole", name, "--verb=get,list", "--resource=pods,pods/log", check=False
    )
    member.kubectl(
        "create", "clusterrolebinding", name, f"--clusterrole={name}", subject, check=False
    )


def test_the_member_decides_as_the_requesting_user(
    host: APIServer,
    product: ProductProcess,
    through: Path,
    kwok_member: tuple[APIServer, KwokNodes],
) -> None:
    """A user in the host's system:masters whom the member does not know: the member's answer
    (403), neither the host's group nor the PediaCluster's rights. The same user, once the
    member grants that name, reads the log."""
    status, body = as_front_proxy(
        product, host, LOG_PATH, user="reach-mallory", groups=["system:masters"]
    )
    assert status == 403 and b"reach-mallory" in body, body  # the member's own Status
    member_grants_log(kwok_member[0], "reach-mallory-log", "--user=reach-mallory")
    body = eventually(
        lambda: granted(product, host, user="reach-mallory", groups=["system:masters"]),
        timeout=20,
        what="the member's grant to reach-mallory",
    )
    assert b"line one" in body


def test_a_host_service_account_is_not_the_members_namesake(
    host: APIServer, through: Path, tmp_path: Path, kwok_member: tuple[APIServer, KwokNodes]
) -> None:
    """The member grants its own ServiceAccount tokens/reach-robot the pods' logs; the host's
    ServiceAccount of the same name and namespace, a Clusterpedia reader, must not get them."""
    member, _ = kwok_member
    member.kubectl("create", "namespace", "tokens", check=False)
    member.kubectl("create", "serviceaccount", "reach-robot", "-n", "tokens", check=False)
    member_grants_log(member, "reach-robot-log", "--serviceaccount=tokens:reach-robot")
    token = service_account_token(host, "reach-robot", reader=True)
    kubeconfig = kubeconfig_for(host, tmp_path / "robot.kubeconfig", token=token)
    listed = kubectl(host, kubeconfig, "get", "pods")
    assert listed.returncode == 0 and "web-0" in listed.stdout, listed.stderr
    # (exec would be refused by the host first: a reader may not create)
    done = kubectl(host, kubeconfig, "logs", "web-0")
    assert done.returncode != 0
    assert "--impersonate-user-prefix" in done.stderr, done.stderr


def test_prefixes_name_host_users_and_groups_on_the_member(
    host: APIServer, through: Path, tmp_path: Path, kwok_member: tuple[APIServer, KwokNodes]
) -> None:
    """With --impersonate-user-prefix and --impersonate-group-prefix the member sees
    'clusterpedia:<user>' and 'clusterpedia:<group>': a host ServiceAccount reaches the member
    only once the member grants its prefixed name, and a group only by its prefixed name."""
    prefixed = serving_only(
        host,
        tmp_path,
        "prefixed",
        "--impersonate-user-prefix=clusterpedia:",
        "--impersonate-group-prefix=clusterpedia:",
    )
    try:
        robot = "system:serviceaccount:tokens:reach-prefixed"
        groups = ["system:masters", "system:serviceaccounts", "system:authenticated"]
        status, body = as_front_proxy(prefixed, host, LOG_PATH, user=robot, groups=groups)
        assert status == 403 and b"clusterpedia:" + robot.encode() in body, body
        member, _ = kwok_member
        member_grants_log(member, "reach-prefixed-user", f"--user=clusterpedia:{robot}")
        member_grants_log(member, "reach-prefixed-group", "--group=clusterpedia:log-readers")
        for user, user_groups in ((robot, groups), ("carol", ["system:masters", "log-readers"])):
            body = eventually(
                partial(granted, prefixed, host, user=user, groups=user_groups),
                timeout=20,
                what=f"the member's grant reaches {user}",
            )
            assert b"line one" in body
        # The group unprefixed is not the granted one.
        status, _ = as_front_proxy(
            prefixed, host, LOG_PATH, user="dave", groups=["system:masters", "other"]
        )
        assert status == 403
    finally:
        prefixed.stop()


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


def test_attach_follows_what_the_container_writes(
    host: APIServer, through: Path, kwok_member: tuple[APIServer, KwokNodes]
) -> None:
    _, nodes = kwok_member
    with follow(host, through, "attach", "web-0") as attached:
        try:
            assert attached.stdout is not None
            # kwok's attach streams what the container writes from now on; write until the
            # session is up and a line arrives.
            line = eventually(
                lambda: nodes.write_log("attached") or _readline(attached, timeout=2),
                timeout=30,
                what="a line through attach",
            )
            assert "attached" in line
        finally:
            attached.terminate()


def _readline(process: subprocess.Popen[str], *, timeout: float) -> str:
    """A line of ``process``'s output within ``timeout`` seconds, else ''."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline()


def test_a_type_that_is_not_synced_is_answered_by_the_member(
    host: APIServer, through: Path, kwok_member: tuple[APIServer, KwokNodes]
) -> None:
    """Only pods are synced from kwok-1: ConfigMaps and Nodes come from the member itself,
    found through the member's discovery (--allow-forward-unsync-resource-request)."""
    member, _ = kwok_member
    member.kubectl("create", "configmap", "unsynced", "-n", NAMESPACE, check=False)
    configmaps = kubectl(host, through, "get", "configmaps", "-o", "name")
    assert configmaps.returncode == 0, configmaps.stderr
    assert "configmap/unsynced" in configmaps.stdout.split()
    nodes = kubectl(host, through, "get", "nodes", "-o", "name")
    assert nodes.returncode == 0, nodes.stderr
    assert nodes.stdout.split() == ["node/node-0"]
    pods = json.loads(kubectl(host, through, "get", "pods", "-o", "json").stdout)
    assert pods["items"][0]["metadata"]["annotations"]["shadow.clusterpedia.io/cluster-name"]


def test_forward_sends_a_list_to_the_member(host: APIServer, through: Path) -> None:
    """The stored pod carries the cluster annotation Clusterpedia adds; the member's own does
    not: with the original's forward label, the list is the member's."""
    forwarded = kubectl(
        host, through, "get", "pods", "-l", "app=web,search.clusterpedia.io/forward", "-o", "json"
    )
    assert forwarded.returncode == 0, forwarded.stderr
    (pod,) = [p for p in json.loads(forwarded.stdout)["items"] if p["metadata"]["name"] == "web-0"]
    assert "shadow.clusterpedia.io/cluster-name" not in (pod["metadata"].get("annotations") or {})
    searched = kubectl(
        host, through, "get", "pods", "-l",
        "search.clusterpedia.io/forward,search.clusterpedia.io/orderby=name",
    )  # fmt: skip
    assert searched.returncode != 0
    assert "answered from storage only" in searched.stderr


def test_the_proxy_path_reaches_any_member_path(
    host: APIServer,
    through: Path,
    kwok_member: tuple[APIServer, KwokNodes],
    tmp_path: Path,
) -> None:
    member, _ = kwok_member
    base = "/proxy"  # kubectl's --raw paths go under the entry's server, the cluster's prefix
    got = kubectl(host, through, "get", "--raw", f"{base}/version")
    assert got.returncode == 0, got.stderr
    version = json.loads(got.stdout)
    assert version == json.loads(member.get("/version"))
    configmap = tmp_path / "cm.json"
    configmap.write_text(
        json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "via-proxy"}})
    )
    path = f"{base}/api/v1/namespaces/{NAMESPACE}/configmaps"
    created = kubectl(host, through, "create", "--raw", path, "-f", str(configmap))
    assert created.returncode == 0, created.stderr
    assert member.kubectl("get", "configmap", "via-proxy", "-n", NAMESPACE).returncode == 0
    token = service_account_token(host, "reach-reader", reader=True)
    reader = kubeconfig_for(host, tmp_path / "reader.kubeconfig", token=token)
    refused = kubectl(host, reader, "create", "--raw", path, "-f", str(configmap))
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower(), refused.stderr  # the member's refusal


def test_proxy_subresources_as_the_policy_allows(host: APIServer, through: Path) -> None:
    member = "/api/v1"  # under the entry's server, the cluster's prefix
    pod_proxy = f"{member}/namespaces/{NAMESPACE}/pods/web-0/proxy/"
    refused = kubectl(host, through, "get", "--raw", pod_proxy)
    assert refused.returncode != 0
    assert "--allowed-proxy-subresources" in refused.stderr, refused.stderr
    # nodes/proxy is allowed: the member itself answers, and refuses a loopback kubelet.
    answered = kubectl(host, through, "get", "--raw", f"{member}/nodes/node-0/proxy/healthz")
    assert "address not allowed" in answered.stderr, answered.stderr


def test_the_pediacluster_credentials_mode_acts_as_the_pediacluster(
    host: APIServer, product: ProductProcess, tmp_path: Path
) -> None:
    """A user the member does not know reads the log with the PediaCluster's rights (the
    member's admin here), and the server's log says what that means."""
    unsafe = serving_only(host, tmp_path, "unsafe", "--allow-pediacluster-config-for-proxy-request")
    try:
        assert "act there with each PediaCluster's own credentials" in unsafe.log()
        token = service_account_token(host, "reach-reader", reader=True)
        path = (
            f"/apis/clusterpedia.io/v1beta1/resources/clusters/{CLUSTER}/api/v1/namespaces/"
            f"{NAMESPACE}/pods/web-0/log"
        )
        for server, allowed in ((unsafe, True), (product, False)):
            request = urllib.request.Request(
                server.url + path, headers={"Authorization": f"Bearer {token}"}
            )
            try:
                with urllib.request.urlopen(
                    request, context=server.ssl_context(), timeout=20
                ) as response:
                    assert allowed and b"line one" in response.read()
            except urllib.error.HTTPError as error:
                assert not allowed and error.code == 403, error.read()
    finally:
        unsafe.stop()


REACH = f"/apis/clusterpedia.io/v1beta1/resources/clusters/{CLUSTER}"
# Each route that reaches the member, with a path that would climb out of what it names: to
# the member's /api/v1/namespaces/reach/pods (a list the reader may not be allowed), were the
# dot segments resolved. {up} is one climbing segment.
CLIMBING_ROUTES = {
    "nodes/proxy": "/api/v1/nodes/node-0/proxy/{up}/{up}/{up}/namespaces/reach/pods",
    "the proxy path": "/proxy/api/v1/namespaces/reach/configmaps/{up}/pods",
    "forward": "/api/v1/namespaces/reach/configmaps/{up}/pods?forward=true",
    "unsynced": "/api/v1/namespaces/reach/configmaps/{up}/{up}/{up}/{up}/api/v1/nodes",
}


def request_as_admin(
    server: ProductProcess, host: APIServer, method: str, path: str
) -> tuple[int, bytes]:
    """``method path`` sent byte for byte (no client-side normalising) as the host's admin."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=server.front_proxy_context(host), timeout=20
    )
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        connection.putheader("X-Remote-User", "admin")
        connection.putheader("X-Remote-Group", "system:masters")
        connection.putheader("Content-Length", "0")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("route", sorted(CLIMBING_ROUTES))
@pytest.mark.parametrize("up", ["..", "%2e%2e", "%2E%2E", ".", "%2e"])
def test_a_path_never_climbs_out_of_the_route_it_names(
    host: APIServer, product: ProductProcess, through: Path, route: str, up: str
) -> None:
    for method in ("GET", "POST"):
        status, body = request_as_admin(
            product, host, method, REACH + CLIMBING_ROUTES[route].format(up=up)
        )
        assert status == 400, (method, body[:300])
        assert b"may not hold the segment" in body, body


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nodes/node-0/proxy/a%2F..%2F..%2Fpods",
        "/proxy/api%2Fv1/namespaces/reach/pods",
        "/api/v1/namespaces/reach%2Fpods/configmaps?forward=true",
    ],
)
def test_an_encoded_slash_never_reaches_a_member(
    host: APIServer, product: ProductProcess, through: Path, path: str
) -> None:
    status, body = request_as_admin(product, host, "GET", REACH + path)
    assert status == 400 and b"encoded '/'" in body, body


@pytest.mark.parametrize("cluster", ["..", ".", "%2e%2e"])
def test_a_dot_cluster_is_no_pediacluster(
    host: APIServer, product: ProductProcess, through: Path, cluster: str
) -> None:
    path = f"/apis/clusterpedia.io/v1beta1/resources/clusters/{cluster}/api/v1/nodes/n/proxy/x"
    status, body = request_as_admin(product, host, "GET", path)
    assert status == 404 and b"is not a PediaCluster" in body, body


def test_a_member_that_never_answers_gets_a_503(host: APIServer, tmp_path: Path) -> None:
    """A member that accepts and completes TLS, then never answers: a log, a followed log and
    an exec upgrade each get 503 naming the wait, and no relay is left open."""
    silent = SilentMember().start()
    name = "silent-member"
    spec = {
        "apiVersion": "cluster.clusterpedia.io/v1alpha2",
        "kind": "PediaCluster",
        "metadata": {"name": name},
        "spec": {
            "apiserver": silent.url,
            "caData": base64.b64encode(silent.ca_pem).decode(),
            "tokenData": base64.b64encode(b"token").decode(),
            "syncResources": [{"group": "", "resources": ["pods"]}],
        },
    }
    host.kubectl("apply", "-f", "-", input=yaml.safe_dump(spec))
    server = serving_only(host, tmp_path, "silent", "--member-response-timeout=2")
    try:
        pod = f"/apis/clusterpedia.io/v1beta1/resources/clusters/{name}/api/v1/namespaces/a/pods/p"
        for path, upgrade in (
            (f"{pod}/log", False),
            (f"{pod}/log?follow=true", False),
            (f"{pod}/exec?command=sh&stdout=true", True),
        ):
            status, body = upgrade_or_get(server, host, path, websocket=upgrade)
            assert status == 503, (path, body)
            assert b"did not start answering within 2s" in body, body
        eventually(
            lambda: (
                not any(
                    value for key, value in metrics(host, server).items() if "reach_open" in key
                )
            ),
            timeout=10,
            what="no relay left open",
        )
        eventually(lambda: silent.connections == 0, timeout=10, what="connections closed")
    finally:
        server.stop()
        host.kubectl("delete", "pediacluster", name, "--wait=false")
        silent.close()


def upgrade_or_get(
    server: ProductProcess, host: APIServer, path: str, *, websocket: bool
) -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=server.front_proxy_context(host), timeout=30
    )
    try:
        connection.putrequest("GET", path)
        connection.putheader("X-Remote-User", "admin")
        connection.putheader("X-Remote-Group", "system:masters")
        if websocket:
            for header, value in (
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", base64.b64encode(b"0123456789abcdef").decode()),
                ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
            ):
                connection.putheader(header, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def metrics(host: APIServer, product: ProductProcess) -> dict[str, float]:
    """The product's reach-through gauges and task count, by sample name and labels."""
    found: dict[str, float] = {}
    for line in product.get_as_front_proxy(host, "/metrics").decode().splitlines():
        if line.startswith(("clusterpedia_reach_open", "clusterpedia_event_loop_tasks")):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def connects(host: APIServer, product: ProductProcess) -> float:
    """apiserver_request_total of exec sessions, as kube-apiserver labels them."""
    wanted = {"verb": "CONNECT", "resource": "pods", "subresource": "exec", "code": "101"}
    text = product.get_as_front_proxy(host, "/metrics").decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "apiserver_request_total" and wanted.items() <= sample.labels.items()
    )


def fewest_tasks(host: APIServer, product: ProductProcess) -> float:
    """The event loop's tasks at their fewest over a few reads: some live for a moment."""
    return min(
        metrics(host, product)["clusterpedia_event_loop_tasks"]
        for _ in range(5)
        if time.sleep(0.2) is None
    )


def test_nothing_is_left_open_after_sessions(
    host: APIServer, product: ProductProcess, through: Path
) -> None:
    before = fewest_tasks(host, product)
    connects_before = connects(host, product)
    for _ in range(5):
        assert kubectl(host, through, "exec", "web-0", "--", "echo", "hi").stdout == "hi\n"
        assert "line one" in kubectl(host, through, "logs", "web-0").stdout
        assert kubectl(host, through, "get", "configmaps").returncode == 0
    eventually(
        lambda: (
            not any(value for name, value in metrics(host, product).items() if "reach_open" in name)
        ),
        timeout=30,
        what="every relay closed",
    )
    eventually(
        lambda: fewest_tasks(host, product) <= before,
        timeout=60,
        what=f"the event loop's tasks back to {before}",
    )
    # each exec counted as kube-apiserver counts one: CONNECT of pods/exec, 101 Switching
    assert connects(host, product) - connects_before == 5


@pytest.fixture
def cut_member(
    host: APIServer, product: ProductProcess, kwok_member: tuple[APIServer, KwokNodes]
) -> Iterator[TcpProxy]:
    """PediaCluster ``kwok-cut``: the kwok member, reached through a proxy the test cuts."""
    member, _ = kwok_member
    proxy = TcpProxy("127.0.0.1", member.port).start()
    config = yaml.safe_load(member.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    spec = pediacluster(CUT, yaml.safe_dump(config).encode(), {"group": "", "resources": ["pods"]})
    host.kubectl("apply", "-f", "-", input=yaml.safe_dump(spec))
    try:
        yield proxy
    finally:
        host.kubectl("delete", "pediacluster", CUT, "--timeout=60s", check=False)
        proxy.close()


def test_a_member_down_mid_exec_ends_the_session(
    host: APIServer,
    product: ProductProcess,
    cut_member: TcpProxy,
    through: Path,
    tmp_path: Path,
) -> None:
    via_proxy = kubeconfig_for(host, tmp_path / "cut.kubeconfig", cluster=CUT)
    wait_until_stored(host, via_proxy, what="kwok-cut synced")
    with follow(
        host, via_proxy, "exec", "web-0", "--", "sh", "-c", "echo started; sleep 120"
    ) as session:
        try:
            assert session.stdout is not None
            assert session.stdout.readline() == "started\n"
            assert metrics(host, product)['clusterpedia_reach_open{kind="exec"}'] == 1
            cut_member.cut()
            assert session.wait(timeout=30) != 0  # ended, long before the command would
        finally:
            session.kill()
    eventually(
        lambda: metrics(host, product)['clusterpedia_reach_open{kind="exec"}'] == 0,
        timeout=30,
        what="the relay closed",
    )
    # The other cluster's sessions are untouched.
    assert kubectl(host, through, "exec", "web-0", "--", "echo", "hi").stdout == "hi\n"
