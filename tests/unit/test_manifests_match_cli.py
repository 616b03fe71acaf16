"""The manifests, the Dockerfile and the CLI agree: every flag the Deployments pass exists,
the image's entrypoint is the console script, ports line up."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterpedia.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _deployment_containers() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.rglob("deployment.yaml")):
        if "helm" in path.parts:
            continue  # a template: tests/e2e/test_helm_chart.py parses what helm renders
        for document in _documents(path):
            if document.get("kind") == "Deployment":
                for container in document["spec"]["template"]["spec"]["containers"]:
                    if "args" in container:
                        found.append((path, container))
    return found


def test_every_deployment_passes_flags_the_cli_accepts() -> None:
    containers = _deployment_containers()
    assert len(containers) == 4  # the SQLite default, two database variants, sharded
    for path, container in containers:
        args = build_parser().parse_args(container["args"])  # SystemExit on an unknown flag
        assert args.command == "run", path
        if "variants" in str(path):
            # Replicas either peer (one syncs) or shard (each syncs its share), never neither.
            assert args.peering != args.sharding, f"{path}: replicas need --peering or --sharding"


def test_environment_variables_the_deployment_sets_are_read() -> None:
    sources = "\n".join(p.read_text() for p in (ROOT / "clusterpedia").rglob("*.py"))
    sources += "\n".join(p.read_text() for p in (ROOT / "operator").rglob("*.py"))
    for _, container in _deployment_containers():
        for variable in container.get("env", []):
            assert f'"{variable["name"]}"' in sources, variable["name"]


def test_dockerfile_entrypoint_and_port_match_the_cli_and_manifests() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = re.search(r'^ENTRYPOINT \["([^"]+)"\]', dockerfile, re.M)
    assert entrypoint is not None and entrypoint.group(1) in scripts
    exposed = re.search(r"^EXPOSE (\d+)", dockerfile, re.M)
    assert exposed is not None
    port = int(exposed.group(1))
    assert build_parser().parse_args(["run"]).secure_port == port
    base = _documents(MANIFESTS / "base" / "deployment.yaml")[0]
    container = base["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == port
    assert f"--secure-port={port}" in container["args"]
    assert re.search(r"^USER (\d+)", dockerfile, re.M) is not None  # non-root
    security = base["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]


@pytest.mark.parametrize("value", ["7", "random"])
def test_priority_accepts_numbers_and_random(value: str) -> None:
    priority = build_parser().parse_args(["run", f"--priority={value}"]).priority
    assert (isinstance(priority, int) and priority > 0) or value == "0"


def test_every_flag_names_its_environment_variable() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, command in commands.items():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert "env " in (action.help or ""), f"clusterpedia {name} {action.option_strings}"
