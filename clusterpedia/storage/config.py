"""Where the storage is: a URL from a flag, the environment, or the original's storage
config file (``config_file.py``).

Precedence: ``--storage-url`` flag, then ``CLUSTERPEDIA_STORAGE_URL``, then a config file
(``--storage-config`` or ``CLUSTERPEDIA_STORAGE_CONFIG``), then the default, a SQLite file in
the working directory.

A read replica comes from ``--read-storage-url``, then ``CLUSTERPEDIA_READ_STORAGE_URL``,
then the config file's ``readReplica`` section; it must be the primary's kind of database.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from clusterpedia.storage.config_file import DEFAULT_SQLITE_FILE, target_from_config
from clusterpedia.storage.engine import StorageURLError, async_url
from clusterpedia.storage.target import StorageTarget, describe
from clusterpedia.yamlerror import yaml_problem

__all__ = [
    "StorageTarget",
    "describe",
    "resolve_storage",
    "resolve_storage_url",
    "target_from_config",
]


def _parse(text: str) -> URL:
    try:
        url = make_url(text)
    except ArgumentError:
        raise StorageURLError(f"invalid storage URL {text!r}") from None
    async_url(url)  # raises StorageURLError for unsupported databases
    return url


def resolve_storage(
    *,
    flag: str | None = None,
    config_file: str | None = None,
    read_flag: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> StorageTarget:
    """The storage to use, validated; raises :class:`StorageURLError` with the reason."""
    environ = os.environ if environ is None else environ
    target = _primary(flag, config_file, environ)
    read_url = read_flag or environ.get("CLUSTERPEDIA_READ_STORAGE_URL")
    if read_url:
        target = target.with_read_replica(_parse(read_url).render_as_string(hide_password=False))
    if target.read is not None:
        _check_replica(target)
    return target


def _check_replica(target: StorageTarget) -> None:
    assert target.read is not None
    primary, replica = make_url(target.url), make_url(target.read.url)
    if primary.get_backend_name() == "sqlite":
        raise StorageURLError("a read replica needs PostgreSQL or MySQL/MariaDB, not SQLite")
    if replica.get_backend_name() != primary.get_backend_name():
        raise StorageURLError(
            f"the read replica ({replica.get_backend_name()}) must be the primary's kind of "
            f"database ({primary.get_backend_name()})"
        )
    if target.read.url == target.url:
        raise StorageURLError("the read replica is the primary itself")


def _primary(
    flag: str | None, config_file: str | None, environ: Mapping[str, str]
) -> StorageTarget:
    for candidate in (flag, environ.get("CLUSTERPEDIA_STORAGE_URL")):
        if candidate:
            return StorageTarget(_parse(candidate).render_as_string(hide_password=False))
    config_file = config_file or environ.get("CLUSTERPEDIA_STORAGE_CONFIG")
    if config_file:
        path = Path(config_file)
        try:
            config = yaml.safe_load(path.read_text())
        except OSError as error:
            raise StorageURLError(f"cannot read storage config {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise StorageURLError(
                f"storage config {path} is not valid YAML: {yaml_problem(error)}"
            ) from None
        target = target_from_config(config or {}, environ=environ, base=path.parent)
        _parse(target.url)
        if target.read is not None:
            _parse(target.read.url)
        return target
    return StorageTarget(f"sqlite:///{DEFAULT_SQLITE_FILE}")


def resolve_storage_url(
    *,
    flag: str | None = None,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Only the URL of :func:`resolve_storage`."""
    return resolve_storage(flag=flag, config_file=config_file, environ=environ).url
