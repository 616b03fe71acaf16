"""The storage config's ``log``: slow statements, failed statements, or every statement,
written to stdout or to a rotated file, as the original's gorm logger does.

Levels keep the original's names: ``Silent`` (nothing), ``Error`` (failed statements),
``Warn`` (those and statements slower than ``slowThreshold``; the default), ``Info`` (every
statement). The statement's parameters are never written: they hold whole objects.
"""

from __future__ import annotations

import gzip
import logging
import logging.handlers
import os
import shutil
import sys
import time
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

LEVELS = ("Silent", "Error", "Warn", "Info")
DEFAULT_FILE = "/var/log/clusterpedia/internalstorage.log"
logger = logging.getLogger("clusterpedia.storage.sql")

_installed: weakref.WeakKeyDictionary[Engine, SQLLog] = weakref.WeakKeyDictionary()
_destination: list[logging.Handler] = []  # one per process, like the original's global logger


@dataclass(frozen=True)
class RotatedFile:
    """``log.logger``: lumberjack's fields, kept."""

    filename: str = DEFAULT_FILE
    max_megabytes: int = 100
    max_backups: int = 0  # 0: every backup is kept (bounded by max_age_days, if set)
    max_age_days: int = 0  # 0: backups are not removed for their age
    local_time: bool = False  # log line times in local time rather than UTC
    compress: bool = False  # gzip each rotated file


@dataclass(frozen=True)
class SQLLog:
    level: str = "Warn"
    slow_seconds: float = 0.2
    stdout: bool = False
    file: RotatedFile = RotatedFile()

    def install(self, engine: Engine) -> None:
        """Log ``engine``'s statements as configured (once per engine)."""
        if self.level == "Silent" or engine in _installed:
            return
        _installed[engine] = self
        _ensure_handler(self)
        event.listen(engine, "before_cursor_execute", _started)
        event.listen(engine, "after_cursor_execute", self._finished)
        event.listen(engine, "handle_error", self._failed)

    def _finished(self, connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        started = connection.info.pop("sql_log_started", None)
        if started is None:
            return
        seconds = time.perf_counter() - started
        if self.level == "Info":
            logger.info("%.1f ms: %s", seconds * 1000, _short(statement))
        elif seconds >= self.slow_seconds > 0:
            logger.warning(
                "slow SQL (%.1f ms >= %.0f ms): %s",
                seconds * 1000,
                self.slow_seconds * 1000,
                _short(statement),
            )

    def _failed(self, context: Any) -> None:
        if context.connection is not None:
            context.connection.info.pop("sql_log_started", None)
        logger.error(
            "SQL failed: %s: %s", context.original_exception, _short(context.statement or "")
        )


def follow(source: Engine, target: Engine) -> None:
    """Give ``target`` the log ``source`` has (a second engine on the same database)."""
    log = _installed.get(source)
    if log is not None:
        log.install(target)


def _started(connection: Any, *_: Any) -> None:
    connection.info["sql_log_started"] = time.perf_counter()


def _short(statement: str) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= 2000 else flat[:2000] + "..."


def close_destination() -> None:
    """Close where the log goes (the next install opens it again)."""
    while _destination:
        handler = _destination.pop()
        logger.removeHandler(handler)
        handler.close()


def _ensure_handler(log: SQLLog) -> None:
    if _destination:
        return
    handler: logging.Handler = (
        logging.StreamHandler(sys.stdout) if log.stdout else _rotating(log.file)
    )
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    formatter.converter = time.localtime if log.file.local_time else time.gmtime
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    _destination.append(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _rotating(file: RotatedFile) -> logging.handlers.RotatingFileHandler:
    os.makedirs(os.path.dirname(os.path.abspath(file.filename)), exist_ok=True)
    # RotatingFileHandler drops backups beyond backupCount; 0 there means "never rotate",
    # so "keep every backup" is a large count, with max_age pruning them instead.
    handler = logging.handlers.RotatingFileHandler(
        file.filename,
        maxBytes=file.max_megabytes * 1024 * 1024,
        backupCount=file.max_backups or 10_000,
    )
    if file.compress:
        handler.namer = lambda name: name + ".gz"
        handler.rotator = _gzip_rotator
    if file.max_age_days:
        rotate = handler.rotator or _plain_rotator

        def rotate_and_prune(source: str, dest: str) -> None:
            rotate(source, dest)
            _prune(file.filename, file.max_age_days)

        handler.rotator = rotate_and_prune
    return handler


def _plain_rotator(source: str, dest: str) -> None:
    os.replace(source, dest)


def _gzip_rotator(source: str, dest: str) -> None:
    with open(source, "rb") as plain, gzip.open(dest, "wb") as packed:
        shutil.copyfileobj(plain, packed)
    os.remove(source)


def _prune(filename: str, max_age_days: int) -> None:
    directory, base = os.path.split(os.path.abspath(filename))
    cutoff = time.time() - max_age_days * 86400
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name.startswith(base + ".") and os.path.getmtime(path) < cutoff:
            os.remove(path)
