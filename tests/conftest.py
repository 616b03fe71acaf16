"""Shared fixtures: real control planes and real databases.

Nothing here swallows a failure. A fixture skips only when a real component is missing on a
developer's machine, and says which; ``hack/test`` sets ``CLUSTERPEDIA_TEST_REQUIRE_ALL=1``,
which turns each of those skips into an error, so CI never passes by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterpedia.testing.assets import Assets, binary_versions, find_assets
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.databases import (
    DIALECTS,
    DatabaseUnavailable,
    fresh_database,
    server_version,
)
from clusterpedia.testing.processes import child_pids

REQUIRE_ALL = os.environ.get("CLUSTERPEDIA_TEST_REQUIRE_ALL") == "1"


def missing(reason: str) -> None:
    """Skip on a developer machine; fail where every component must be present (CI)."""
    if REQUIRE_ALL:
        pytest.fail(f"required test component missing: {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    assets = find_assets()
    if assets is None:
        lines.append("test binaries: not provisioned (python -m clusterpedia.testing.assets)")
    else:
        lines.append(f"test binaries: {assets.directory}")
        lines += [f"  {name}: {text}" for name, text in binary_versions(assets).items()]
    for dialect in DIALECTS:
        try:
            lines.append(f"database {dialect}: {server_version(dialect)}")
        except DatabaseUnavailable as error:
            lines.append(f"database {dialect}: unavailable ({error})")
    return lines


@pytest.fixture(scope="session")
def assets() -> Assets:
    found = find_assets()
    if found is None:
        missing(
            "kube-apiserver/etcd/kubectl are not provisioned: run "
            "`python -m clusterpedia.testing.assets` or set KUBEBUILDER_ASSETS"
        )
    assert found is not None
    return found


@pytest.fixture(scope="session")
def control_plane(
    assets: Assets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """One etcd for the whole session; tests add the API servers they need."""
    plane = ControlPlane(assets=assets, workdir=tmp_path_factory.mktemp("controlplane"))
    with plane:
        yield plane


@pytest.fixture(scope="session")
def aggregator(control_plane: ControlPlane) -> APIServer:
    """A host with the aggregation layer's front-proxy flags, shared by the session."""
    return control_plane.apiservers.get("aggregator") or control_plane.add_apiserver(
        "aggregator", front_proxy=True
    )


@pytest.fixture(scope="session")
def member_clusters(control_plane: ControlPlane) -> list[APIServer]:
    """Two member API servers shared by the session (tests use their own namespaces)."""
    return [control_plane.add_apiserver(f"member-{index}") for index in (1, 2)]


@pytest.fixture(scope="module", params=DIALECTS)
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database per test module on each of SQLite, PostgreSQL and MySQL.

    The matrix is for tests whose subject is the storage's behaviour. A module whose subject is
    something else (the operator, member access, the product's wiring) is marked
    ``pytestmark = pytest.mark.one_database("<dialect>")`` and runs on that one; the modules so
    marked are spread over the three, and every database still runs the whole storage contract
    (tests/integration/test_storage_*, test_change_log, test_catalog, test_databases,
    test_hostile_requests, test_watch_api, test_apiserver; tests/e2e/test_member_oracle,
    test_crash, test_shutdown)."""
    dialect: str = request.param
    try:
        server_version(dialect)
    except DatabaseUnavailable as error:
        missing(str(error))
    label = Path(str(request.module.__file__)).stem.removeprefix("test_")
    with fresh_database(dialect, label=label) as url:
        yield url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder: tests/unit, tests/integration, tests/e2e; and run a
    module marked ``one_database(dialect)`` on that database alone (see :func:`database_url`)."""
    kept, deselected = [], []
    for item in items:
        for kind in ("unit", "integration", "e2e"):
            if f"{os.sep}tests{os.sep}{kind}{os.sep}" in str(item.path):
                item.add_marker(kind)
        only = item.get_closest_marker("one_database")
        callspec = getattr(item, "callspec", None)
        dialect = callspec.params.get("database_url") if callspec is not None else None
        if only is not None and dialect is not None and dialect != only.args[0]:
            deselected.append(item)
        else:
            kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every fixture has been torn down by now: no child process may be left running."""
    leftovers = child_pids()
    if leftovers:
        commands = []
        for pid in leftovers:
            try:
                commands.append(
                    f"{pid}: {Path(f'/proc/{pid}/cmdline').read_text().replace(chr(0), ' ')}"
                )
            except OSError:
                commands.append(str(pid))
        print("\nERROR: test harness left child processes running:\n  " + "\n  ".join(commands))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
