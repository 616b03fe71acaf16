"""The Helm chart (manifests/helm/clusterpedia) with the real helm (built from its pinned Go
module): lint, template for each storage choice, the rendering accepted by a real
kube-apiserver (server-side dry run), its Deployment args and storage config read by our own
parsers, its RBAC the same as the kustomize tree's, and bad values refused by the chart."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterpedia import cli
from clusterpedia.features import parse_feature_gates
from clusterpedia.settings import RunSettings
from clusterpedia.storage.config import target_from_config
from clusterpedia.testing.assets import AssetsUnavailable, ensure_helm
from clusterpedia.testing.controlplane import APIServer

CHART = Path(__file__).resolve().parents[2] / "manifests" / "helm" / "clusterpedia"
BASE_RBAC = CHART.parents[1] / "base" / "rbac.yaml"
NAMESPACE = "clusterpedia-system"
CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()

CHOICES: dict[str, list[str]] = {
    "sqlite": [],
    "postgres": [
        "--set", "storage.type=postgres", "--set", "storage.host=db.databases.svc",
        "--set", "storage.port=5432", "--set", "storage.password.value=s3cret",
        "--set", "storage.sslMode=verify-full", "--set", "storage.sslRootCertSecret=db-ca",
        "--set", "storage.connPool.maxOpenConns=40", "--set", "replicas=3",
        "--set", "featureGates.PruneManagedFields=true",
        "--set", "featureGates.AllowParameterizedSQLQuery=true",
    ],
    "mysql": [
        "--set", "storage.type=mysql", "--set", "storage.host=mysql.databases.svc",
        "--set", "storage.password.existingSecret=db-password", "--set", "replicas=2",
        "--set", "storage.params.charset=utf8mb4", "--set-json", 'extraArgs=["--max-watches=5000"]',
    ],
    "sharded": [
        "--set", "storage.type=postgres", "--set", "storage.host=db.databases.svc",
        "--set", "storage.password.value=s3cret", "--set", "replicas=3", "--set", "sharding=true",
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return ensure_helm()
    except AssetsUnavailable as error:
        if os.environ.get("CLUSTERPEDIA_TEST_REQUIRE_ALL"):
            raise
        pytest.skip(str(error))


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def render(helm: Path, *values: str) -> list[dict[str, Any]]:
    output = run_helm(
        helm, "template", "clusterpedia", str(CHART), "--namespace", NAMESPACE, "--include-crds",
        "--set", f"apiService.caBundle={CA}", *values,
    ).stdout  # fmt: skip
    return [document for document in yaml.safe_load_all(output) if document]


def find(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(
        d
        for d in documents
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    )


@pytest.mark.parametrize("choice", sorted(CHOICES))
def test_lint_passes_for_every_storage_choice(helm: Path, choice: str) -> None:
    run_helm(helm, "lint", str(CHART), "--set", f"apiService.caBundle={CA}", *CHOICES[choice])


@pytest.mark.parametrize("choice", sorted(CHOICES))
def test_the_rendering_is_accepted_by_the_api_server(
    helm: Path, host: APIServer, choice: str
) -> None:
    host.kubectl("create", "namespace", NAMESPACE, check=False)  # present after other tests
    documents = render(helm, *CHOICES[choice])
    result = host.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(documents), check=False
    )
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/clusterpedia" in result.stdout
    assert "apiservice.apiregistration.k8s.io/v1beta1.clusterpedia.io" in result.stdout


@pytest.mark.parametrize("choice", sorted(CHOICES))
def test_our_cli_reads_the_rendered_args_and_storage_config(helm: Path, choice: str) -> None:
    documents = render(helm, *CHOICES[choice])
    container = find(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = cli.build_parser().parse_args(container["args"])
    settings = RunSettings.from_arguments(args)
    gates = parse_feature_gates(settings.process.feature_gates)
    storage_text = find(documents, "ConfigMap", "clusterpedia-storage")["data"]["storage.yaml"]
    target = target_from_config(
        yaml.safe_load(storage_text), environ={"DB_PASSWORD": "x"}, base=Path("/")
    ) if choice not in ("postgres", "sharded") else None  # the CA file is in the pod  # fmt: skip
    if choice == "sqlite":
        assert target is not None and target.url.startswith("sqlite:////var/lib/clusterpedia/")
        assert not settings.operator.peering
    if choice == "postgres":
        config = yaml.safe_load(storage_text)
        assert config["sslMode"] == "verify-full"
        assert config["sslRootCertFile"] == "/etc/clusterpedia/db-ca/ca.crt"
        assert settings.operator.peering and gates.allow_where_sql
        assert find(documents, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    if choice == "sharded":  # every replica syncs its share; two stay up through drains
        assert settings.operator.sharding and not settings.operator.peering
        assert find(documents, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
        assert not [d for d in documents if d["kind"] == "ClusterKopfPeering"]
        pod = find(documents, "Deployment")["spec"]["template"]["spec"]
        assert pod["affinity"]["podAntiAffinity"]
        assert "POD_NAME" in {e["name"] for e in pod["containers"][0]["env"]}
    if choice == "mysql":
        assert target is not None and "charset=utf8mb4" in target.url
        assert settings.serving.max_watches == 5000
        volumes = find(documents, "Deployment")["spec"]["template"]["spec"]["volumes"]
        assert {"name": "db", "secret": {"secretName": "db-password"}} in volumes


def test_the_charts_rbac_is_the_kustomize_trees(helm: Path) -> None:
    """The RBAC whose sufficiency test_install proves: the chart may not drift from it."""
    base = [d for d in yaml.safe_load_all(BASE_RBAC.read_text()) if d]
    rendered = render(helm)
    for kind in ("ClusterRole", "Role"):
        for expected in (d for d in base if d["kind"] == kind):
            name = expected["metadata"]["name"]
            found = find(rendered, kind, name)
            assert found["rules"] == expected["rules"], name


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "storage.type=oracle"], "storage.type must be sqlite, postgres or mysql"),
        (["--set", "replicas=2"], "replicas must be 1"),
        (["--set", "storage.type=postgres"], "storage.host is required"),
        (
            ["--set", "storage.type=mysql", "--set", "storage.host=db"],
            "storage.password.value (or storage.password.existingSecret) is required",
        ),
    ],
)
def test_bad_values_are_refused_with_the_reason(
    helm: Path, values: list[str], message: str
) -> None:
    result = run_helm(
        helm, "template", "clusterpedia", str(CHART), "--set", f"apiService.caBundle={CA}",
        *values, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and message in result.stderr


def test_the_apiservice_needs_its_ca_bundle(helm: Path) -> None:
    result = run_helm(helm, "template", "clusterpedia", str(CHART), check=False)
    assert result.returncode != 0 and "apiService.caBundle is required" in result.stderr
