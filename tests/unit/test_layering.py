"""The one-way import rule of the README's "Layout", checked on every module's imports.

Each unit (a package or top-level module of ``clusterpedia``, with ``apiserver/`` and
``operator/`` as ``clusterpedia.apiserver`` and ``clusterpedia.operator``) sits on a layer and
imports only from layers below it, never a sibling on its own layer. Above the storage, only
its port (``clusterpedia.storage`` itself) is imported, and Kopf and aiohttp's server stay in
the two folders that are built on them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Bottom to top. A unit imports only units of lower layers.
LAYERS: list[set[str]] = [
    {
        "__init__",
        "gvr",
        "paths",
        "backoff",
        "memory",
        "certs",
        "settings",
        "process",
        "features",
        "gotemplate",
        "yamlerror",
    },
    {"storage", "kube"},
    {"search", "watch", "sync", "sharding", "kubeconfig", "testing", "importing"},
    {"apiserver", "operator"},
    {"playground", "compose"},
    {"cli"},
]
# Storage modules the search language builds values of (syntax trees and errors, no database).
SEARCH_MAY_READ = {"errors", "query", "selection", "condition"}
# The test harness builds writers and readers directly; the product goes through the port.
STORAGE_INSIDE_ALLOWED = {"storage", "testing"}
FRAMEWORKS = {"kopf": {"operator"}, "aiohttp.web": {"apiserver", "testing"}}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. clusterpedia.sync.worker
    target: str  # the imported module, e.g. clusterpedia.storage.writer
    line: int


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"clusterpedia.{unit} is on no layer: add it to LAYERS and the README")


def violations(imports: list[Import]) -> Iterator[str]:
    for imp in imports:
        where = f"{imp.source} line {imp.line}: imports {imp.target}"
        for framework, allowed in FRAMEWORKS.items():
            used = imp.target == framework or imp.target.startswith(framework + ".")
            if used and unit_of(imp.source) not in allowed:
                yield f"{where}: {framework} belongs to {sorted(allowed)} only"
        if not imp.target.startswith("clusterpedia"):
            continue
        source, target = unit_of(imp.source), unit_of(imp.target)
        if source == target:
            continue
        if layer_of(target) >= layer_of(source):
            yield f"{where}: {source} (layer {layer_of(source)}) may not import {target} " \
                f"(layer {layer_of(target)})"  # fmt: skip
        parts = imp.target.split(".")
        inside = target == "storage" and len(parts) > 2 and source not in STORAGE_INSIDE_ALLOWED
        if inside and not (source == "search" and parts[2] in SEARCH_MAY_READ):
            yield f"{where}: import the storage port, clusterpedia.storage, instead"


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[0] in ("apiserver", "operator"):
        parts = ["clusterpedia", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[Import]:
    source = module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(source, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield Import(source, node.module, node.lineno)
            for alias in node.names:  # `from aiohttp import web`, `from clusterpedia import x`
                name = f"{node.module}.{alias.name}"
                if not name.startswith("clusterpedia") or _is_product_module(name):
                    yield Import(source, name, node.lineno)


def _is_product_module(name: str) -> bool:
    path = ROOT / Path(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def product_files() -> list[Path]:
    files = [*(ROOT / "apiserver").rglob("*.py"), *(ROOT / "operator").rglob("*.py")]
    for path in (ROOT / "clusterpedia").rglob("*.py"):
        relative = path.relative_to(ROOT / "clusterpedia")
        if relative.parts[0] not in ("apiserver", "operator"):  # the links to the two above
            files.append(path)
    return sorted(files)


def test_every_import_follows_the_layers() -> None:
    imports = [imp for path in product_files() for imp in imports_of(path)]
    assert len(imports) > 300  # the walk found the product
    found = sorted(set(violations(imports)))
    assert not found, "imports against the layering (README, Layout):\n" + "\n".join(found)


def test_the_rule_catches_what_it_forbids() -> None:
    """The checker itself: each kind of breach is reported, an allowed import is not."""
    cases = {
        Import("clusterpedia.storage.writer", "clusterpedia.search.selectors", 1): "layer",
        Import("clusterpedia.search.params", "clusterpedia.watch.feed", 1): "layer",
        Import("clusterpedia.sync.cluster", "clusterpedia.storage.catalog", 1): "port",
        Import("clusterpedia.apiserver.app", "clusterpedia.storage.reader", 1): "port",
        Import("clusterpedia.sync.worker", "kopf", 1): "kopf",
        Import("clusterpedia.watch.feed", "aiohttp.web", 1): "aiohttp.web",
    }
    for imp, expected in cases.items():
        found = list(violations([imp]))
        assert found, f"not caught: {imp}"
        assert expected in found[0] or (expected == "port" and "storage port" in found[0])
    allowed = [
        Import("clusterpedia.apiserver.group", "clusterpedia.storage", 1),
        Import("clusterpedia.search.wheresql", "clusterpedia.storage.condition", 1),
        Import("clusterpedia.testing.objects", "clusterpedia.storage.writer", 1),
        Import("clusterpedia.storage.writer", "clusterpedia.gvr", 1),
        Import("clusterpedia.operator.handlers", "kopf", 1),
    ]
    assert not list(violations(allowed))


def test_every_unit_is_on_a_layer() -> None:
    units = {unit_of(module_name(path)) for path in product_files()}
    for unit in units:
        layer_of(unit)


# The handler chain's filters and what they read; the servers (layers that answer paths) sit
# above them. A filter reads the request as with_request_info resolved it (requestinfo.py),
# never a server's own routing.
FILTERS = {
    "chain", "admission", "deadline", "authn", "authz", "requestinfo", "requestmetrics", "status",
    "warning",
}  # fmt: skip
SERVERS = {"reach", "resources", "group", "system", "watch", "server", "app", "members", "relay"}


def test_no_filter_imports_a_server() -> None:
    found = []
    for name in sorted(FILTERS):
        path = ROOT / "apiserver" / f"{name}.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level == 1 and target in SERVERS:
                    found.append(f"apiserver/{name}.py line {node.lineno}: imports .{target}")
                inside = target.startswith("clusterpedia.apiserver.")
                if inside and target.rsplit(".", 1)[1] in SERVERS:
                    found.append(f"apiserver/{name}.py line {node.lineno}: imports {target}")
    assert not found, "a filter imports a server:\n" + "\n".join(found)
