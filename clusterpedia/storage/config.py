"""Where the storage is: a URL from a flag, the environment, or a storage config file.

Precedence: ``--storage-url`` flag, then ``CLUSTERPEDIA_STORAGE_URL``, then a config file
(``--storage-config``), then the default, a SQLite file in the working directory.

The config file follows the original's ``internalstorage-config.yaml`` in spirit, so existing
ConfigMaps translate directly::

    type: postgres          # postgres | mysql | sqlite | sqlite3
    host: db.example
    port: 5432
    user: clusterpedia
    database: clusterpedia
    # password: never here in production; DB_PASSWORD or passwordFile instead
    passwordFile: /etc/clusterpedia/db-password
    params: {sslmode: require}
    # dsn: "sqlite:////var/lib/clusterpedia/db.sqlite"   (a URL; wins over the fields)

The password comes from ``DB_PASSWORD``, then ``passwordFile``, then ``password``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from clusterpedia.storage.engine import StorageURLError, async_url

DEFAULT_SQLITE_FILE = "clusterpedia.sqlite"
_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}


def _password(config: Mapping[str, Any], environ: Mapping[str, str], base: Path) -> str | None:
    if environ.get("DB_PASSWORD"):
        return environ["DB_PASSWORD"]
    if config.get("passwordFile"):
        path = Path(str(config["passwordFile"]))
        path = path if path.is_absolute() else base / path
        try:
            return path.read_text().strip()
        except OSError as error:
            raise StorageURLError(f"cannot read passwordFile {path}: {error.strerror}") from None
    password = config.get("password")
    return None if password is None else str(password)


def url_from_config(config: Mapping[str, Any], *, environ: Mapping[str, str], base: Path) -> str:
    """The storage URL a parsed config file describes."""
    if not isinstance(config, Mapping):
        raise StorageURLError("the storage config must be a mapping of fields")
    password = _password(config, environ, base)
    if config.get("dsn"):
        url = _parse(str(config["dsn"]))
        if password and url.password is None and url.get_backend_name() != "sqlite":
            url = url.set(password=password)
        return url.render_as_string(hide_password=False)
    kind = str(config.get("type", "")).lower()
    if kind in ("sqlite", "sqlite3"):
        database = config.get("database") or DEFAULT_SQLITE_FILE
        return f"sqlite:///{database}"
    if kind not in _DRIVERS:
        raise StorageURLError(
            f"storage config type {kind!r} is not supported; use postgres, mysql or sqlite"
        )
    for field in ("host", "database"):
        if not config.get(field):
            raise StorageURLError(f"storage config needs {field!r} for type {kind}")
    params = config.get("params") or {}
    if not isinstance(params, Mapping):
        raise StorageURLError("storage config 'params' must be a mapping")
    url = URL.create(
        _DRIVERS[kind],
        username=str(config["user"]) if config.get("user") else None,
        password=password,
        host=str(config["host"]),
        port=int(config["port"]) if config.get("port") else None,
        database=str(config["database"]),
        query={str(key): str(value) for key, value in params.items()},
    )
    return url.render_as_string(hide_password=False)


def _parse(text: str) -> URL:
    try:
        url = make_url(text)
    except ArgumentError:
        raise StorageURLError(f"invalid storage URL {text!r}") from None
    async_url(url)  # raises StorageURLError for unsupported databases
    return url


def resolve_storage_url(
    *,
    flag: str | None = None,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The storage URL to use, validated; raises :class:`StorageURLError` with the reason."""
    environ = os.environ if environ is None else environ
    for candidate in (flag, environ.get("CLUSTERPEDIA_STORAGE_URL")):
        if candidate:
            return _parse(candidate).render_as_string(hide_password=False)
    config_file = config_file or environ.get("CLUSTERPEDIA_STORAGE_CONFIG")
    if config_file:
        path = Path(config_file)
        try:
            config = yaml.safe_load(path.read_text())
        except OSError as error:
            raise StorageURLError(f"cannot read storage config {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise StorageURLError(f"storage config {path} is not valid YAML: {error}") from None
        url = url_from_config(config or {}, environ=environ, base=path.parent)
        _parse(url)
        return url
    return f"sqlite:///{DEFAULT_SQLITE_FILE}"


def describe(url: str) -> str:
    """The URL with its password hidden, for logs."""
    return make_url(url).render_as_string(hide_password=True)
