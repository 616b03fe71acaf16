"""The settings tree: every option of `clusterpedia run` parses into its typed home."""

from __future__ import annotations

import dataclasses

import pytest

from clusterpedia.cli import build_parser
from clusterpedia.settings import RunSettings


def test_defaults_are_the_tree_s_own() -> None:
    settings = RunSettings.from_arguments(build_parser().parse_args(["run"]))
    assert settings == RunSettings()
    assert settings.serving.secure_port == 8443 and settings.watch.watch_poll_interval == 0.2


def test_flags_land_typed_in_their_sections() -> None:
    args = build_parser().parse_args(
        ["run", "--secure-port=9443", "--kube-api-qps=2.5", "--peering", "--priority=7",
         "--change-log-max-events=10", "--storage-url=sqlite:///x.db"]
    )  # fmt: skip
    settings = RunSettings.from_arguments(args)
    assert settings.serving.secure_port == 9443
    assert settings.sync.kube_api_qps == 2.5
    assert settings.operator.peering is True and settings.operator.priority == 7
    assert settings.watch.change_log_max_events == 10
    assert settings.storage.storage_url == "sqlite:///x.db"


def test_the_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTERPEDIA_MAX_WATCHES", "12")
    monkeypatch.setenv("CLUSTERPEDIA_STORE_SECRET_DATA", "true")
    monkeypatch.setenv("KUBECONFIG", "/tmp/host.kubeconfig")
    settings = RunSettings.from_arguments(build_parser().parse_args(["run"]))
    assert settings.serving.max_watches == 12
    assert settings.sync.store_secret_data is True
    assert settings.host.kubeconfig == "/tmp/host.kubeconfig"
    flagged = build_parser().parse_args(["run", "--max-watches=3"])
    assert RunSettings.from_arguments(flagged).serving.max_watches == 3  # the flag wins


def test_option_names_are_unique_across_sections() -> None:
    names = [
        option.name
        for section in dataclasses.fields(RunSettings)
        for option in dataclasses.fields(section.default_factory())  # type: ignore[misc]
    ]
    assert len(names) == len(set(names))
