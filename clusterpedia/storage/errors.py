"""Errors the storage raises, and which database errors are worth retrying.

Nothing above the storage sees a driver's or SQLAlchemy's exception: every read and write
raises :class:`StorageError` (or :class:`InvalidQuery` for a query built wrong).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable

from sqlalchemy.exc import DBAPIError


class StorageError(RuntimeError):
    """Base class of storage failures."""


class StorageUnavailable(StorageError):
    """The database kept failing with transient errors; nothing of the batch was applied."""


class StorageFailed(StorageError):
    """The database refused an operation in a way a retry will not cure (a dropped table, a
    revoked privilege); nothing of the batch was applied."""


class InvalidQuery(ValueError):
    """A search parameter, selector or continue token is malformed; no query was run.

    ``reason`` follows Kubernetes: ``BadRequest`` (400) or ``Invalid`` (422).
    """

    def __init__(self, message: str, *, reason: str = "BadRequest"):
        super().__init__(message)
        self.message = message
        self.reason = reason


class ContinueExpired(InvalidQuery):
    """A continue token can no longer be honoured (410 Expired)."""

    def __init__(self, message: str):
        super().__init__(message, reason="Expired")


class ResourceVersionTooLarge(Exception):
    """A continue token or watch names a resourceVersion this database has not applied yet
    (a read replica behind the one that served the client before): Kubernetes' 504 with
    ``ResourceVersionTooLarge``, which clients retry."""

    def __init__(self, requested: int, current: int):
        super().__init__(f"Too large resource version: {requested}, current: {current}")
        self.requested = requested
        self.current = current


# PostgreSQL SQLSTATEs: serialization failure, deadlock, admin/crash shutdown, cannot connect.
_PG_TRANSIENT = {"40001", "40P01", "57P01", "57P02", "57P03"}
_PG_TRANSIENT_CLASSES = ("08",)  # connection exceptions
# MySQL/MariaDB: lock wait timeout, deadlock, server gone, lost connection, shutdown, read-only.
_MYSQL_TRANSIENT = {1205, 1213, 2006, 2013, 1053, 1290, 2003}


def add_transient_codes(codes: Iterable[str | int]) -> None:
    """Count these too (the storage config's recoverableErrCodes, recoverableErrNumbers):
    SQLSTATE strings for PostgreSQL, error numbers for MySQL."""
    for code in codes:
        if isinstance(code, int):
            _MYSQL_TRANSIENT.add(code)
        else:
            _PG_TRANSIENT.add(code)


def is_transient(error: BaseException) -> bool:
    """True for database errors that a retry of the whole transaction can cure."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    original = getattr(error, "orig", error)
    sqlstate = getattr(original, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate in _PG_TRANSIENT or sqlstate.startswith(_PG_TRANSIENT_CLASSES)
    args = getattr(original, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in _MYSQL_TRANSIENT
    message = str(original).lower()
    return "database is locked" in message or "database is busy" in message


def database_error(error: Exception, driver_error: type[Exception]) -> DBAPIError | None:
    """``error`` as SQLAlchemy's wrapper if it came from the database: statements sent on the
    driver's own connection (the COPY paths) raise the driver's errors (``driver_error``)
    unwrapped."""
    if isinstance(error, DBAPIError):
        return error
    if isinstance(error, driver_error):
        wrapped = DBAPIError.instance(None, None, error, driver_error)
        assert isinstance(wrapped, DBAPIError)  # what it returns for a driver error
        return wrapped
    return None


def storage_error(error: DBAPIError, what: str) -> StorageError:
    """``error`` as the storage reports it: unavailable when a retry may cure it."""
    if is_transient(error):
        return StorageUnavailable(f"{what}: database unavailable ({error.orig})")
    return StorageFailed(f"{what}: {error.orig}")


@contextlib.asynccontextmanager
async def database_errors(what: str) -> AsyncIterator[None]:
    """Database errors inside as :class:`StorageError`; also a decorator of coroutines."""
    try:
        yield
    except DBAPIError as error:
        raise storage_error(error, what) from error
