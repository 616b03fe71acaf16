"""How test binaries are found: KUBEBUILDER_ASSETS, TEST_ASSET_*, the cache, or a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterpedia.testing import assets as assets_module
from clusterpedia.testing.assets import BINARIES, AssetsUnavailable, ensure_assets, find_assets


def _fake_binaries(directory: Path, names: tuple[str, ...] = BINARIES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return directory


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLUSTERPEDIA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    for name in BINARIES:
        monkeypatch.delenv(assets_module._env_var_name(name), raising=False)


def test_complete_kubebuilder_assets_are_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = _fake_binaries(tmp_path / "kb")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(directory))
    found = find_assets()
    assert found is not None and found.directory == directory


def test_test_asset_variable_overrides_one_binary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = _fake_binaries(tmp_path / "kb")
    other = _fake_binaries(tmp_path / "other", ("kubectl",)) / "kubectl"
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(directory))
    monkeypatch.setenv("TEST_ASSET_KUBECTL", str(other))
    found = find_assets()
    assert found is not None
    assert (found.kubectl, found.etcd) == (other, directory / "etcd")


def test_incomplete_assets_fall_back_to_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(_fake_binaries(tmp_path / "kb", ("etcd",))))
    cached = _fake_binaries(tmp_path / "cache" / "assets" / assets_module.cache_key())
    found = find_assets()
    assert found is not None and found.directory == cached


def test_without_go_or_assets_the_error_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(_fake_binaries(tmp_path / "kb", ("etcd",))))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(AssetsUnavailable) as caught:
        ensure_assets(log=False)
    message = str(caught.value)
    assert "lacks some of kube-apiserver, etcd, kubectl" in message
    assert "no Go toolchain" in message and assets_module.KUBERNETES_VERSION in message


def test_cache_key_names_every_pinned_version() -> None:
    key = assets_module.cache_key()
    assert assets_module.KUBERNETES_VERSION in key and assets_module.ETCD_VERSION in key
