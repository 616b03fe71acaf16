"""Real Kubernetes control planes on loopback for tests, benchmarks and the playground.

One etcd serves any number of kube-apiservers, each under its own etcd prefix, so "clusters" are
cheap to add and adding one never restarts etcd. Every API server has its own PKI and an admin
kubeconfig. There are no nodes, controllers or kube-proxy (the envtest model): pods never run,
but every object can be created, listed and watched.

    with ControlPlane() as plane:
        member = plane.add_apiserver("member-1")
        member.kubectl("apply", "-f", "objects.yaml")
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from clusterpedia.testing.assets import Assets, ensure_assets
from clusterpedia.testing.pki import FRONT_PROXY_CLIENT_NAME, APIServerPKI, make_apiserver_pki
from clusterpedia.testing.processes import ManagedProcess, free_port

logger = logging.getLogger(__name__)

START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
READY_TIMEOUT = 90.0


class ControlPlaneError(RuntimeError):
    """A control-plane process failed to start or to become ready."""


def _wait_until(
    probe: Any, *, process: ManagedProcess, what: str, timeout: float = READY_TIMEOUT
) -> None:
    """Poll ``probe()`` until it returns True; fail fast if the process exits."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if not process.running():
            raise ControlPlaneError(
                f"{what} exited with code {process.exit_code()} before it was ready; "
                f"log {process.log_path}:\n{process.log_tail()}"
            )
        try:
            if probe():
                return
        except (OSError, urllib.error.URLError) as error:
            last_error = str(error)
        time.sleep(0.2)
    raise ControlPlaneError(
        f"{what} was not ready after {timeout:.0f}s ({last_error}); log {process.log_path}:\n"
        f"{process.log_tail()}"
    )


def _lost_port_race(process: ManagedProcess) -> bool:
    """True when the process failed because its chosen port was taken meanwhile."""
    return "address already in use" in process.log_tail(200)


class Etcd:
    """A single-member etcd on loopback with fsync off (test data only)."""

    def __init__(self, *, binary: Path, workdir: Path, extra_args: Sequence[str] = ()):
        self.binary = binary
        self.workdir = workdir
        self.extra_args = list(extra_args)
        self.client_url = ""
        self._process: ManagedProcess | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            client_port, peer_port = free_port(), free_port()
            self.client_url = f"http://127.0.0.1:{client_port}"
            peer_url = f"http://127.0.0.1:{peer_port}"
            data_dir = self.workdir / "etcd-data"
            shutil.rmtree(data_dir, ignore_errors=True)
            self._process = ManagedProcess(
                name="etcd",
                argv=[
                    self.binary,
                    "--name=default",
                    f"--data-dir={data_dir}",
                    f"--listen-client-urls={self.client_url}",
                    f"--advertise-client-urls={self.client_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=default={peer_url}",
                    "--unsafe-no-fsync=true",
                    "--log-level=warn",
                    *self.extra_args,
                ],
                log_path=self.workdir / "etcd.log",
            )
            self._process.start()
            try:
                _wait_until(self._healthy, process=self._process, what="etcd")
                return
            except ControlPlaneError:
                if not _lost_port_race(self._process) or attempt == START_ATTEMPTS:
                    self._process.stop()
                    raise
                self._process.stop()
                logger.info("etcd lost a port race (attempt %d); retrying on new ports", attempt)

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.client_url}/health", timeout=2) as response:
            return bool(json.load(response).get("health") == "true")

    def request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Call etcd's v3 JSON gateway, e.g. ``request("/v3/kv/compaction", {...})``."""
        data = json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.client_url}{path}", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.load(response)
            return result

    def revision(self) -> int:
        """The current etcd revision."""
        key = base64.b64encode(b"/").decode()
        return int(self.request("/v3/kv/range", {"key": key, "limit": 1})["header"]["revision"])

    def compact(self, revision: int | None = None) -> int:
        """Compact history up to ``revision`` (default: now); watches older than it get 410."""
        revision = self.revision() if revision is None else revision
        self.request("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None


class APIServer:
    """One kube-apiserver with its own PKI, etcd prefix and admin kubeconfig."""

    def __init__(
        self,
        *,
        name: str,
        assets: Assets,
        etcd: Etcd,
        workdir: Path,
        front_proxy: bool = False,
        extra_args: Sequence[str] = (),
    ):
        self.name = name
        self.assets = assets
        self.etcd = etcd
        self.workdir = workdir
        self.front_proxy = front_proxy
        self.extra_args = list(extra_args)
        self.port = 0
        self.pki: APIServerPKI = make_apiserver_pki(workdir / "pki", front_proxy=front_proxy)
        self.kubeconfig = workdir / "kubeconfig"
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def _argv(self) -> list[str]:
        pki = self.pki
        argv = [
            str(self.assets.kube_apiserver),
            "--advertise-address=127.0.0.1",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--etcd-servers={self.etcd.client_url}",
            f"--etcd-prefix=/clusters/{self.name}",
            f"--cert-dir={self.workdir / 'cert-dir'}",
            f"--tls-cert-file={pki.serving.cert}",
            f"--tls-private-key-file={pki.serving.key}",
            f"--client-ca-file={pki.client_ca}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            "--authorization-mode=RBAC",
            f"--service-account-issuer=https://127.0.0.1:{self.port}/",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
        ]
        if self.front_proxy:
            assert pki.front_proxy_ca and pki.front_proxy_client
            argv += [
                f"--requestheader-client-ca-file={pki.front_proxy_ca}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT_NAME}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
                f"--proxy-client-key-file={pki.front_proxy_client.key}",
            ]
        return argv + self.extra_args

    def start(self) -> None:
        """Start the server and wait for ``/readyz``.

        A restart keeps the previous port (clients configured with the URL keep working) unless
        that port has been taken meanwhile.
        """
        if self.running():
            return
        for attempt in range(1, START_ATTEMPTS + 1):
            if attempt > 1 or not self.port:
                self.port = free_port()
            self._process = ManagedProcess(
                name=f"kube-apiserver[{self.name}]",
                argv=self._argv(),
                log_path=self.workdir / "kube-apiserver.log",
            )
            self._process.start()
            try:
                _wait_until(self._ready, process=self._process, what=self._process.name)
                break
            except ControlPlaneError:
                if not _lost_port_race(self._process) or attempt == START_ATTEMPTS:
                    self._process.stop()
                    raise
                self._process.stop()
                logger.info("%s lost a port race (attempt %d); retrying", self.name, attempt)
        self._write_kubeconfig()

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this server and presents the admin certificate."""
        context = ssl.create_default_context(cafile=str(self.pki.serving_ca))
        context.load_cert_chain(str(self.pki.admin.cert), str(self.pki.admin.key))
        return context

    def get(self, path: str, *, timeout: float = 10) -> bytes:
        """GET ``path`` as the admin; raises ``urllib.error.HTTPError`` on non-2xx."""
        with urllib.request.urlopen(
            f"{self.url}{path}", context=self.ssl_context(), timeout=timeout
        ) as response:
            body: bytes = response.read()
            return body

    def _ready(self) -> bool:
        return self.get("/readyz", timeout=5) == b"ok"

    def kubeconfig_dict(self, *, user: str = "admin") -> dict[str, Any]:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": b64(self.pki.serving_ca),
                    },
                }
            ],
            "users": [
                {
                    "name": f"{self.name}-{user}",
                    "user": {
                        "client-certificate-data": b64(self.pki.admin.cert),
                        "client-key-data": b64(self.pki.admin.key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": self.name,
                    "context": {"cluster": self.name, "user": f"{self.name}-{user}"},
                }
            ],
            "current-context": self.name,
        }

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(yaml.safe_dump(self.kubeconfig_dict()))
        self.kubeconfig.chmod(0o600)

    def kubectl(
        self, *args: str, input: str | bytes | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this server as the admin."""
        data = input.decode() if isinstance(input, bytes) else input
        result = subprocess.run(
            [str(self.assets.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=data,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            error = subprocess.CalledProcessError(
                result.returncode, result.args, output=result.stdout, stderr=result.stderr
            )
            error.add_note(f"kubectl said: {result.stderr.strip()[-2000:]}")  # shown by pytest
            raise error
        return result


class ControlPlane:
    """One etcd plus any number of API servers; ``stop()`` leaves no process behind."""

    def __init__(
        self,
        *,
        assets: Assets | None = None,
        workdir: Path | None = None,
        etcd_args: Sequence[str] = (),
    ):
        self.assets = assets or ensure_assets()
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="clusterpedia-controlplane-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.etcd = Etcd(binary=self.assets.etcd, workdir=self.workdir, extra_args=etcd_args)
        self.apiservers: dict[str, APIServer] = {}

    def start(self) -> ControlPlane:
        try:
            self.etcd.start()
        except BaseException:
            self.stop()
            raise
        return self

    def add_apiserver(
        self, name: str, *, front_proxy: bool = False, extra_args: Sequence[str] = ()
    ) -> APIServer:
        """Start a new API server named ``name`` on the shared etcd."""
        if name in self.apiservers:
            raise ValueError(f"an API server named {name!r} already exists")
        server = APIServer(
            name=name,
            assets=self.assets,
            etcd=self.etcd,
            workdir=self.workdir / "apiservers" / name,
            front_proxy=front_proxy,
            extra_args=extra_args,
        )
        self.apiservers[name] = server
        server.start()
        return server

    def pids(self) -> list[int]:
        """PIDs of every process this control plane runs now."""
        candidates = [self.etcd.pid, *(server.pid for server in self.apiservers.values())]
        return [pid for pid in candidates if pid is not None]

    def stop(self) -> None:
        for server in self.apiservers.values():
            server.stop()
        self.etcd.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
