"""Helpers the benchmarks in bench/ share."""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.product import ProductProcess

CRDS = Path(__file__).resolve().parents[1] / "crds"  # packaged copies of manifests/crds


def operator_host(plane: ControlPlane, *, front_proxy: bool = False) -> APIServer:
    """A host kube-apiserver with the CRDs of manifests/crds established."""
    host = plane.add_apiserver("bench-host", front_proxy=front_proxy)
    host.kubectl("apply", "-f", str(CRDS))
    host.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd", "--all")
    return host


def quiet_product(
    host: APIServer,
    storage_url: str,
    label: str,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> ProductProcess:
    """``clusterpedia run`` for a benchmark: its own process, a fresh workdir, warnings only."""
    return ProductProcess(
        workdir=Path(tempfile.mkdtemp(prefix=f"bench-{label}-")),
        kubeconfig=host.kubeconfig,
        storage_url=storage_url,
        extra_args=("--log-level=WARNING", *extra_args),
        env=env,
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
    return _status_mb(pid, "VmRSS")


def peak_rss_mb(pid: int) -> float:
    """The high-water mark of process ``pid``'s resident memory (``VmHWM``), in MB."""
    return _status_mb(pid, "VmHWM")


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User plus system CPU of process ``pid`` (``children``: plus its exited children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


# Whose CPU a database figure counts (SQLite runs inside our process).
DATABASE_PROCESSES = ("postgres", "mariadbd", "mysqld")


def processes_cpu_seconds(*names: str) -> float:
    """CPU of every live process whose command name is one of ``names``, with the exited
    children each has reaped (a PostgreSQL postmaster counts its ended backends that way)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() in names:
                total += cpu_seconds(int(entry.name), children=True)
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return total


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


@contextlib.contextmanager
def profiled(pid: int, output: Path | None) -> Iterator[None]:
    """Sample process ``pid`` with py-spy into ``output`` (collapsed stacks) while the block
    runs; nothing when ``output`` is None."""
    if output is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250"]
    recorder = subprocess.Popen(
        [*command, "--nonblocking", "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # attached before the block's work starts
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        recorder.wait(timeout=60)


def profile_summary(path: Path, top: int = 15) -> list[str]:
    """The functions with the most samples in a py-spy collapsed-stack file: own samples
    (the frame on top) and inclusive ones, as shares of all samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short_frame(frame) for frame in stack.split(";")]
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{path.name}: {total} samples; own% incl%  function (file)"]
    for frame, samples in own.most_common(top):
        share, inclusive_share = 100 * samples / total, 100 * inclusive[frame] / total
        lines.append(f"  {share:5.1f} {inclusive_share:5.1f}  {frame}")
    return lines


def _short_frame(frame: str) -> str:
    """``func (/long/path/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``: a function keeps one line
    of the summary whichever of its lines was sampled."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(file).parts[-2:])})"


class Client:
    """GETs to our API server as the host's front proxy sends them for an admin."""

    def __init__(self, base: str, context: ssl.SSLContext):
        self.base = base
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=64),
            headers={"X-Remote-User": "bench", "X-Remote-Group": "system:masters"},
        )

    async def get(self, path: str) -> bytes:
        async with self.session.get(self.base + path) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status} {body[:300]!r}")
            return body


async def measure(
    operation: Callable[[], Awaitable[Any]], *, concurrency: int, requests: int
) -> dict[str, float]:
    """Latency percentiles and request rate of ``requests`` calls over ``concurrency`` tasks."""
    await operation()  # warm up
    timings: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await operation()
            timings.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    timings.sort()
    return {
        "p50_ms": statistics.median(timings),
        "p99_ms": timings[min(len(timings) - 1, int(len(timings) * 0.99))],
        "rps": len(timings) / elapsed,
    }


def continue_of(body: bytes) -> str:
    """The continue token from a list's metadata, which leads the body: the client does not
    parse the items (this measures the server, not client-side JSON decoding)."""
    head = body[: body.find(b'"items":')]
    return str(json.loads(head.rstrip(b",") + b"}")["metadata"].get("continue", ""))
