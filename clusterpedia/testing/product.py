"""The whole product as a user runs it: ``clusterpedia run`` in a child process."""

from __future__ import annotations

import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.processes import ManagedProcess, free_port


def console_script() -> str:
    """The installed ``clusterpedia`` command (not ``python -m``, which would import the source
    tree from the working directory instead of the installed package)."""
    return str(Path(sys.executable).parent / "clusterpedia")


class ProductProcess:
    """``clusterpedia run`` with its own port, certificate directory and log."""

    def __init__(
        self,
        *,
        workdir: Path,
        kubeconfig: Path,
        storage_url: str,
        extra_args: tuple[str, ...] = (),
        name: str = "clusterpedia",
        env: dict[str, str] | None = None,
    ):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.cert_dir = workdir / "certs"
        self.process = ManagedProcess(
            name=name,
            argv=[
                console_script(),
                "run",
                f"--kubeconfig={kubeconfig}",
                f"--storage-url={storage_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.cert_dir}",
                *extra_args,
            ],
            log_path=workdir / f"{name}.log",
            env=env,
        )

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        return (self.cert_dir / "ca.crt").read_bytes()

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def front_proxy_context(self, host: APIServer) -> ssl.SSLContext:
        """A client context presenting ``host``'s front-proxy client certificate, as the
        host's aggregation layer connects to us."""
        proxy = host.pki.front_proxy_client
        if proxy is None:
            raise ValueError(f"{host.name} runs without the front-proxy flags")
        context = self.ssl_context()
        context.load_cert_chain(str(proxy.cert), str(proxy.key))
        return context

    def get_as_front_proxy(
        self, host: APIServer, path: str, *, user: str = "admin", group: str = "system:masters"
    ) -> bytes:
        """GET ``path`` as ``host``'s aggregation layer would for ``user`` in ``group``."""
        request = urllib.request.Request(
            self.url + path, headers={"X-Remote-User": user, "X-Remote-Group": group}
        )
        with urllib.request.urlopen(
            request, context=self.front_proxy_context(host), timeout=10
        ) as response:
            body: bytes = response.read()
            return body

    def start(self, *, timeout: float = 60) -> ProductProcess:
        """Start and wait until ``/readyz`` answers 200."""
        self.process.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise RuntimeError(f"clusterpedia exited early:\n{self.process.log_tail()}")
            try:
                with urllib.request.urlopen(
                    f"{self.url}/readyz", context=self.ssl_context(), timeout=5
                ) as response:
                    if response.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.3)
        self.process.stop()
        raise RuntimeError(
            f"clusterpedia was not ready in {timeout:.0f}s:\n{self.process.log_tail()}"
        )

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        """SIGTERM; the exit code."""
        return self.process.stop(timeout=30)

    def kill(self) -> int | None:
        """SIGKILL: a crash in the middle of whatever it was doing."""
        return self.process.kill()
