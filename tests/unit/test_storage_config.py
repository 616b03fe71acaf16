"""Storage URL precedence and the storage config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterpedia.storage.config import describe, resolve_storage_url
from clusterpedia.storage.engine import StorageURLError


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_default_is_a_sqlite_file_in_the_working_directory() -> None:
    assert resolve_storage_url(environ={}) == "sqlite:///clusterpedia.sqlite"


def test_flag_beats_environment_beats_config(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "type: sqlite\ndatabase: /data/x.db\n")
    environ = {
        "CLUSTERPEDIA_STORAGE_URL": "postgresql://u@h/env",
        "CLUSTERPEDIA_STORAGE_CONFIG": config,
    }
    assert resolve_storage_url(flag="mysql+pymysql://u@h/flag", environ=environ).endswith("/flag")
    assert resolve_storage_url(environ=environ).endswith("/env")
    assert (
        resolve_storage_url(environ={"CLUSTERPEDIA_STORAGE_CONFIG": config})
        == "sqlite:////data/x.db"
    )


def test_config_fields_with_password_from_env_or_file(tmp_path: Path) -> None:
    secret = write(tmp_path / "pw", "from-file\n")
    config = write(
        tmp_path / "c.yaml",
        "type: postgres\nhost: db\nport: 5433\nuser: cp\ndatabase: pedia\n"
        f"passwordFile: {secret}\nparams: {{sslmode: require}}\n",
    )
    assert (
        resolve_storage_url(config_file=config, environ={})
        == "postgresql+psycopg://cp:from-file@db:5433/pedia?sslmode=require"
    )
    assert "cp:from-env@" in resolve_storage_url(
        config_file=config, environ={"DB_PASSWORD": "from-env"}
    )


def test_mysql_config_and_dsn(tmp_path: Path) -> None:
    config = write(tmp_path / "m.yaml", "type: mysql\nhost: m\nuser: root\ndatabase: cp\n")
    assert resolve_storage_url(config_file=config, environ={"DB_PASSWORD": "p@ss"}) == (
        "mysql+pymysql://root:p%40ss@m/cp"
    )
    dsn = write(tmp_path / "d.yaml", "dsn: postgresql+psycopg://u@h/db\n")
    assert (
        resolve_storage_url(config_file=dsn, environ={"DB_PASSWORD": "x"})
        == "postgresql+psycopg://u:x@h/db"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type: oracle\nhost: h\ndatabase: d\n", "not supported"),
        ("type: postgres\ndatabase: d\n", "needs 'host'"),
        ("type: [unclosed\n", "not valid YAML"),
        ("- a list\n", "mapping"),
        ("dsn: 'mongodb://h/d'\n", "unsupported storage URL"),
        (
            "type: mysql\nhost: h\ndatabase: d\npasswordFile: /nonexistent/pw\n",
            "cannot read passwordFile",
        ),
    ],
)
def test_bad_configs_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(StorageURLError, match=message):
        resolve_storage_url(config_file=write(tmp_path / "bad.yaml", text), environ={})


def test_missing_config_file_and_bad_url() -> None:
    with pytest.raises(StorageURLError, match="cannot read storage config"):
        resolve_storage_url(config_file="/nonexistent/c.yaml", environ={})
    with pytest.raises(StorageURLError):
        resolve_storage_url(flag="not a url", environ={})


def test_describe_hides_the_password() -> None:
    assert describe("postgresql+psycopg://u:secret@h/db") == "postgresql+psycopg://u:***@h/db"
