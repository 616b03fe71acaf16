"""Test binaries (kube-apiserver, etcd, kubectl) in one directory, the envtest way.

Tests, benchmarks and the playground run real control-plane processes. Their binaries come from:

1. ``KUBEBUILDER_ASSETS`` when it is set and holds all three binaries (the envtest convention;
   ``TEST_ASSET_<NAME>`` overrides a single binary, as controller-runtime does);
2. otherwise a cached build made here with the Go toolchain, from Go modules pinned in
   ``gomod/`` beside this file. ``k8s.io/kubernetes`` cannot be ``go install``-ed (its go.mod
   replaces the staging modules with relative paths), so ``gomod/kubernetes/go.mod`` requires it
   and replaces every ``k8s.io/*`` staging module with its published ``v0.x`` twin.

The cache lives outside the repository, keyed by versions and platform, so the second run costs
nothing. ``python -m clusterpedia.testing.assets`` provisions and prints the directory.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.8"
HELM_VERSION = "v3.22.0"  # for the Helm chart's tests (gomod/helm)
KWOK_VERSION = "v0.8.0"  # simulated nodes and pods: logs, exec, port-forward (gomod/kwok)
BINARIES = ("kube-apiserver", "etcd", "kubectl")
PROGRESS_SECONDS = 30.0  # a line this often while a build runs


class AssetsUnavailable(RuntimeError):
    """Neither usable ``KUBEBUILDER_ASSETS`` nor a Go toolchain to build the binaries."""


@dataclass(frozen=True)
class Assets:
    """Where each test binary is."""

    kube_apiserver: Path
    etcd: Path
    kubectl: Path

    @property
    def directory(self) -> Path:
        return self.kube_apiserver.parent


def cache_root() -> Path:
    """The per-user cache directory for heavy build outputs (never inside the repository)."""
    explicit = os.environ.get("CLUSTERPEDIA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clusterpedia-py"


def cache_key() -> str:
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return f"kubernetes-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_{sys.platform}-{machine}"


def _env_var_name(binary: str) -> str:
    return "TEST_ASSET_" + binary.upper().replace("-", "_")


def _complete(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in BINARIES)


def _from_directory(directory: Path) -> Assets:
    paths = {
        name: Path(os.environ.get(_env_var_name(name)) or directory / name) for name in BINARIES
    }
    return Assets(
        kube_apiserver=paths["kube-apiserver"], etcd=paths["etcd"], kubectl=paths["kubectl"]
    )


def find_assets() -> Assets | None:
    """The binaries if they are already available, without building anything."""
    env_dir = os.environ.get("KUBEBUILDER_ASSETS")
    if env_dir and _complete(Path(env_dir)):
        return _from_directory(Path(env_dir))
    cached = cache_root() / "assets" / cache_key()
    if _complete(cached):
        return _from_directory(cached)
    return None


def ensure_assets(*, log: bool = True) -> Assets:
    """Return the binaries, building and caching them first if needed.

    Raises :class:`AssetsUnavailable` with an explanation when nothing can provide them.
    """
    found = find_assets()
    if found is not None:
        return found
    go = shutil.which("go")
    if go is None:
        env_dir = os.environ.get("KUBEBUILDER_ASSETS")
        hint = (
            f"KUBEBUILDER_ASSETS={env_dir} lacks some of {', '.join(BINARIES)}"
            if env_dir
            else "KUBEBUILDER_ASSETS is not set"
        )
        raise AssetsUnavailable(
            f"cannot provide test binaries: {hint}, and no Go toolchain ('go') is on PATH to "
            f"build kube-apiserver/kubectl {KUBERNETES_VERSION} and etcd {ETCD_VERSION}. "
            "Install Go >= 1.25 or point KUBEBUILDER_ASSETS at a directory with the binaries."
        )
    target = cache_root() / "assets" / cache_key()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / ".lock"):
        if not _complete(target):  # another process may have built it while we waited
            _build(go=go, target=target, log=log)
    return _from_directory(target)


@contextlib.contextmanager
def _exclusive_lock(path: Path):  # type: ignore[no-untyped-def]
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _version_ldflags() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={KUBERNETES_VERSION}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(flags)


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[tuple[Path, Path]]:
    """(bin directory, scratch directory) to build into; on success the bin directory
    becomes ``target`` in one rename, so a half-built cache is never seen."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        bin_dir = staging / "bin"
        bin_dir.mkdir()
        yield bin_dir, staging
        shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier one
        bin_dir.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build(*, go: str, target: Path, log: bool) -> None:
    """Build all binaries into a scratch directory, then move it into place atomically."""
    with _staged(target) as (bin_dir, staging):
        _go_build(
            go=go,
            module="kubernetes",
            packages=["k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl"],
            ldflags=_version_ldflags(),
            output=f"{bin_dir}/",  # a directory: one binary per package
            workdir=staging / "kubernetes",
            log=log,
        )
        _go_build(
            go=go,
            module="etcd",
            packages=["go.etcd.io/etcd/server/v3"],
            ldflags="-s -w",
            output=str(bin_dir / "etcd"),
            workdir=staging / "etcd",
            log=log,
        )
        (bin_dir / "VERSIONS.json").write_text(
            json.dumps({"kubernetes": KUBERNETES_VERSION, "etcd": ETCD_VERSION}, indent=2) + "\n"
        )


def _go_build(
    *,
    go: str,
    module: str,
    packages: list[str],
    ldflags: str,
    output: str,
    workdir: Path,
    log: bool,
) -> None:
    source = resources.files("clusterpedia.testing") / "gomod" / module
    workdir.mkdir()
    for name in ("go.mod", "go.sum", "tools.go"):
        (workdir / name).write_bytes((source / name).read_bytes())
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
    # -v names each package as it is compiled: counted, they show a long first build moving
    command = [go, "build", "-v", "-trimpath", f"-ldflags={ldflags}", "-o", output, *packages]
    if log:
        print(
            f"clusterpedia assets: go build {' '.join(packages)} "
            "(the first build takes about ten minutes on two cores; cached afterwards)",
            file=sys.stderr,
            flush=True,
        )
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    tail: collections.deque[str] = collections.deque(maxlen=80)
    started = last_report = time.monotonic()
    downloaded = compiled = 0
    for line in process.stderr:
        tail.append(line)
        if line.startswith("go: downloading "):
            downloaded += 1
        elif line.strip() and " " not in line.strip():
            compiled += 1
        if log and time.monotonic() - last_report >= PROGRESS_SECONDS:
            last_report = time.monotonic()
            print(
                f"clusterpedia assets: {module}: {downloaded} modules downloaded, "
                f"{compiled} packages compiled, {last_report - started:.0f}s",
                file=sys.stderr,
                flush=True,
            )
    code = process.wait()
    if code != 0:
        raise AssetsUnavailable(f"go build failed for {module} (exit {code}):\n{''.join(tail)}")
    if log:
        print(
            f"clusterpedia assets: {module}: built in {time.monotonic() - started:.0f}s "
            f"({compiled} packages compiled)",
            file=sys.stderr,
            flush=True,
        )


def _platform() -> str:
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return f"{sys.platform}-{machine}"


@dataclass(frozen=True)
class GoTool:
    """A test binary built from its pinned module in ``gomod/<module>``."""

    name: str
    version: str
    package: str
    ldflags: str
    variable: str  # an environment variable naming a binary to use instead

    @property
    def directory(self) -> Path:
        return cache_root() / "assets" / f"{self.name}-{self.version}_{_platform()}"


HELM = GoTool(
    "helm",
    HELM_VERSION,
    "helm.sh/helm/v3/cmd/helm",
    f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
    "TEST_ASSET_HELM",
)
KWOK = GoTool(
    "kwok",
    KWOK_VERSION,
    "sigs.k8s.io/kwok/cmd/kwok",
    "-s -w",  # the module's own consts.Version already says v0.8.0
    "TEST_ASSET_KWOK",
)
# kwok needs Stages (how simulated nodes and pods move through their lives); the pinned
# module's own, copied from the module cache next to the binary.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat/node-heartbeat.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)


def find_tool(tool: GoTool) -> Path | None:
    """The tool if it is already here: its environment variable, else the cached build."""
    explicit = os.environ.get(tool.variable)
    if explicit and os.access(explicit, os.X_OK):
        return Path(explicit)
    cached = tool.directory / tool.name
    return cached if os.access(cached, os.X_OK) else None


def ensure_tool(tool: GoTool, *, log: bool = True) -> Path:
    """The tool, built from its pinned Go module and cached on first use."""
    found = find_tool(tool)
    if found is not None:
        return found
    go = shutil.which("go")
    if go is None:
        raise AssetsUnavailable(
            f"cannot provide {tool.name} {tool.version}: {tool.variable} is not set and no Go "
            "toolchain ('go') is on PATH to build it"
        )
    target = tool.directory
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / ".lock"):
        if not os.access(target / tool.name, os.X_OK):
            with _staged(target) as (bin_dir, staging):
                workdir = staging / tool.name
                _go_build(
                    go=go,
                    module=tool.name,
                    packages=[tool.package],
                    ldflags=tool.ldflags,
                    output=str(bin_dir / tool.name),
                    workdir=workdir,
                    log=log,
                )
                if tool is KWOK:
                    _copy_kwok_stages(go, workdir, bin_dir / "stages")
    return target / tool.name


def _copy_kwok_stages(go: str, workdir: Path, into: Path) -> None:
    module = subprocess.run(
        [go, "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GOFLAGS": "-mod=readonly"},
    ).stdout.strip()
    into.mkdir()
    for stage in KWOK_STAGES:
        shutil.copyfile(Path(module) / "kustomize" / "stage" / stage, into / Path(stage).name)


def kwok_stages(kwok: Path) -> list[Path]:
    """The Stage files beside a kwok binary (a ``stages`` folder, as the build leaves it)."""
    stages = kwok.parent / "stages"
    found = [stages / Path(stage).name for stage in KWOK_STAGES]
    missing = [path for path in found if not path.is_file()]
    if missing:
        raise AssetsUnavailable(f"kwok's Stage files are missing: {', '.join(map(str, missing))}")
    return found


def find_helm() -> Path | None:
    return find_tool(HELM)


def ensure_helm(*, log: bool = True) -> Path:
    return ensure_tool(HELM, log=log)


def ensure_kwok(*, log: bool = True) -> Path:
    return ensure_tool(KWOK, log=log)


def binary_versions(assets: Assets) -> dict[str, str]:
    """Ask each binary for its version (printed by the test command and the test log)."""

    def first_line(*command: str | Path) -> str:
        done = subprocess.run(
            [str(part) for part in command], capture_output=True, text=True, timeout=60
        )
        text = (done.stdout or done.stderr).strip()
        return text.splitlines()[0] if text else f"(no output, exit {done.returncode})"

    return {
        "kube-apiserver": first_line(assets.kube_apiserver, "--version"),
        "etcd": first_line(assets.etcd, "--version"),
        "kubectl": first_line(assets.kubectl, "version", "--client"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clusterpedia.testing.assets",
        description="Provision kube-apiserver, etcd and kubectl for tests; print their directory.",
    )
    parser.add_argument("--versions", action="store_true", help="also print each binary's version")
    parser.add_argument("--helm", action="store_true", help="provision helm; print its path")
    parser.add_argument("--kwok", action="store_true", help="provision kwok; print its path")
    args = parser.parse_args(argv)
    try:
        if args.helm:
            print(ensure_helm())
            return 0
        if args.kwok:
            print(ensure_kwok())
            return 0
        assets = ensure_assets()
    except AssetsUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.versions:
        for name, version in binary_versions(assets).items():
            print(f"{name}: {version}", file=sys.stderr)
    print(assets.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
