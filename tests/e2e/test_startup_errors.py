"""Every way ``clusterpedia run`` can fail to start, as a new user meets it: one line naming the
cause and what to change, a non-zero exit, and no traceback unless ``--log-level debug``."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.processes import free_port
from clusterpedia.testing.product import console_script


def run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("KUBERNETES_")
    }
    environment.update(env or {})
    return subprocess.run(
        [
            console_script(),
            "run",
            "--no-operator",
            "--bind-address=127.0.0.1",
            f"--cert-dir={tmp_path / 'certs'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        cwd=tmp_path,
    )


def assert_refused(done: subprocess.CompletedProcess[str], *causes: str) -> str:
    """The cause line: the last line, ours, naming every one of ``causes``."""
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("clusterpedia"), done.stderr
    for cause in causes:
        assert cause in last, (cause, done.stderr)
    return last


@pytest.fixture(scope="module")
def host(aggregator: APIServer) -> APIServer:
    return aggregator


@pytest.fixture(scope="module")
def mismatched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A serving certificate and the key of another."""
    directory = tmp_path_factory.mktemp("mismatched")
    ca = trustme.CA()
    one, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    one.cert_chain_pems[0].write_to_path(str(directory / "tls.crt"))
    other.private_key_pem.write_to_path(str(directory / "tls.key"))
    return directory / "tls.crt", directory / "tls.key"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_no_host_cluster_access(tmp_path: Path) -> None:
    done = run(
        tmp_path,
        f"--storage-url=sqlite:///{tmp_path / 'db'}",
        env={"HOME": str(tmp_path), "KUBECONFIG": ""},
    )
    assert_refused(done, "cannot start", "no host cluster access", "--kubeconfig")
    missing = run(tmp_path, "--kubeconfig=/nonexistent/kubeconfig")
    assert_refused(missing, "--kubeconfig /nonexistent/kubeconfig: no such file")


def test_storage_that_cannot_be_reached_or_read(host: APIServer, tmp_path: Path) -> None:
    kubeconfig = f"--kubeconfig={host.kubeconfig}"
    unreachable = run(
        tmp_path,
        kubeconfig,
        f"--storage-url=postgresql+psycopg://u:secret@127.0.0.1:{free_port()}/d",
    )
    line = assert_refused(unreachable, "cannot start: the storage", "--storage-url")
    assert "secret" not in unreachable.stderr  # the password is never printed
    assert "127.0.0.1" in line
    wrong = run(tmp_path, kubeconfig, "--storage-url=mongodb://h/d")
    assert_refused(wrong, "unsupported storage URL scheme 'mongodb'")
    (tmp_path / "storage.yaml").write_text("type: [unclosed\n")
    unreadable = run(tmp_path, kubeconfig, f"--storage-config={tmp_path / 'storage.yaml'}")
    assert_refused(unreadable, "not valid YAML")


def test_serving_certificate_missing_or_mismatched(
    host: APIServer, tmp_path: Path, mismatched: tuple[Path, Path]
) -> None:
    common = (f"--kubeconfig={host.kubeconfig}", f"--storage-url=sqlite:///{tmp_path / 'db'}")
    missing = run(
        tmp_path, *common, "--tls-cert-file=/nonexistent.crt", "--tls-private-key-file=/x.key"
    )
    assert_refused(missing, "the serving certificate (/nonexistent.crt", "--tls-cert-file")
    cert, key = mismatched
    wrong_key = run(tmp_path, *common, f"--tls-cert-file={cert}", f"--tls-private-key-file={key}")
    assert_refused(wrong_key, "the serving certificate", "its own key")


def test_a_port_in_use(host: APIServer, tmp_path: Path, busy_port: int) -> None:
    done = run(
        tmp_path,
        f"--kubeconfig={host.kubeconfig}",
        f"--storage-url=sqlite:///{tmp_path / 'db'}",
        f"--secure-port={busy_port}",
    )
    assert_refused(done, f"127.0.0.1:{busy_port} is in use", "--secure-port")


@pytest.mark.parametrize(
    ("flag", "cause"),
    [
        ("--secure-port=abc", "argument --secure-port: invalid int value: 'abc'"),
        ("--feature-gates=NoSuchGate=true", "--feature-gates"),
        ("--allowed-proxy-subresources=pods/status", "not a supported subresource"),
        ("--sharding-lease-duration=1", "at least 3 seconds"),
        ("--no-such-flag", "unrecognized arguments: --no-such-flag"),
    ],
)
def test_a_bad_flag_value(tmp_path: Path, flag: str, cause: str) -> None:
    assert_refused(run(tmp_path, flag), cause)


def test_the_traceback_is_there_with_debug(tmp_path: Path) -> None:
    done = run(tmp_path, "--kubeconfig=/nonexistent/kubeconfig", "--log-level=debug")
    assert done.returncode != 0 and "Traceback" in done.stderr, done.stderr
