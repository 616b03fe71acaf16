"""The package layout promised in the README: mapped folders, importable modules, no shadowing."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import clusterpedia
from clusterpedia.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_python_folder_is_a_listed_package() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools["package-dir"]
    listed = set(setuptools["packages"])
    folders_to_packages = {folder: package for package, folder in package_dir.items()}
    expected = set()
    for folder, package in folders_to_packages.items():
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.parent.relative_to(ROOT / folder)
            if any(part in {"__pycache__", "gomod"} for part in relative.parts):
                continue
            expected.add(".".join([package, *relative.parts]))
    assert expected <= listed, f"add to [tool.setuptools] packages: {sorted(expected - listed)}"


def test_operator_folder_does_not_shadow_the_standard_library() -> None:
    # `python -c` puts the working directory first on sys.path, as `python -m pytest` does.
    probe = subprocess.run(
        [sys.executable, "-c", "import operator; print(operator.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(probe.stdout.strip()).resolve().parent == stdlib


def test_every_module_imports() -> None:
    packages = [clusterpedia]
    packages += [
        importlib.import_module(f"clusterpedia.{name}") for name in ("operator", "apiserver")
    ]
    imported = []
    for package in packages:
        for module in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if module.name.endswith("__main__"):
                continue
            importlib.import_module(module.name)
            imported.append(module.name)
    assert "clusterpedia.operator.handlers" in imported
    assert "clusterpedia.apiserver.app" in imported
    assert "clusterpedia.testing.controlplane" in imported


def test_the_api_server_alone_loads_neither_kopf_nor_the_kubernetes_client(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The modules ``clusterpedia run --no-operator`` loads (``cli._serve`` imports the operator
    only when it runs one): Kopf and the kubernetes client it loads would hold 50 MB of a
    server's memory."""
    served = (
        "clusterpedia.cli",
        "clusterpedia.apiserver.server",
        "clusterpedia.apiserver.watch",
        "clusterpedia.watch.retention",
    )
    code = (
        f"import sys; import {', '.join(served)}; "
        "print(sorted(m for m in ('kopf', 'kubernetes') if m in sys.modules))"
    )
    probe = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert probe.stdout.strip() == "[]"


def test_cli_prints_its_version(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"clusterpedia-py {clusterpedia.__version__}"


def test_packaged_crds_equal_the_manifests() -> None:
    """The playground applies the CRDs shipped in the package; they must be the manifests'."""
    packaged = {p.name: p.read_bytes() for p in (ROOT / "clusterpedia" / "crds").glob("*.yaml")}
    manifests = {
        p.name: p.read_bytes()
        for p in (ROOT / "manifests" / "crds").glob("*.yaml")
        if p.name != "kustomization.yaml"
    }
    assert packaged == manifests


def test_the_source_tree_resolves_the_mapped_folders_as_the_wheel_does() -> None:
    """clusterpedia/apiserver and clusterpedia/operator link to the top-level folders, so mypy,
    ruff and `python -c` from a checkout read the files one edits, not an installed copy."""
    for name in ("apiserver", "operator"):
        link = ROOT / "clusterpedia" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve()
    probe = subprocess.run(
        [sys.executable, "-c", "import clusterpedia.apiserver.app as m; print(m.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(probe.stdout.strip()).parent == ROOT / "clusterpedia" / "apiserver"


def test_no_comment_cites_a_document_outside_the_repository() -> None:
    """Comments once cited design notes ("reference C1", ``reference/performance.md``) that a
    reader of the repository cannot open; cite a public source or a benchmark instead."""
    pattern = re.compile(r"reference [A-C][0-9]|reference/[a-z]+\.md")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("clusterpedia", "apiserver", "operator", "tests", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if path.resolve() != Path(__file__).resolve()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, offenders
