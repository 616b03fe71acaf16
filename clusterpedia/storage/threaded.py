"""Page reads on PostgreSQL through psycopg's synchronous driver, in a small thread pool.

Deliberately off the asyncio driver for this one job: reading a page of 500 ~3 KB objects
(1.5 MB) took 20.8 ms with psycopg's async connection and 10.6 ms with its sync one
(``bench/api.py``, 100k pods). libpq reads the socket ~16 KB at a time, and the async
connection goes back through the event loop for every read; the sync one waits in C with the
GIL released. The event loop never blocks: the wait happens in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Row
from sqlalchemy.sql import Executable

THREADS = 8


class _BinaryResultCursor(psycopg.Cursor[Any]):
    """Binary results: ``bytea`` arrives as raw bytes, not hex text to decode."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.format = psycopg.pq.Format.BINARY


def _binary_results(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.cursor_factory = _BinaryResultCursor


class ThreadedReads:
    """Runs read statements on a synchronous PostgreSQL engine in ``threads`` workers."""

    def __init__(self, url: URL, *, threads: int = THREADS):
        # No ping before every read (a round trip per request, a third of a get by name):
        # a read that finds its pooled connection closed (the server restarted) is simply
        # read again on a new one, once.
        self.engine = sa.create_engine(
            url.set(drivername="postgresql+psycopg"),
            pool_size=threads,
            max_overflow=0,
        )
        event.listen(self.engine, "connect", _binary_results)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pg-read")

    def _all(self, statement: Executable, running: _Running) -> list[Row[Any]]:
        try:
            return self._read(statement, running)
        except sa.exc.DBAPIError as error:
            if not error.connection_invalidated:
                raise
            # The pool drops every connection older than this one; reads are safe to repeat.
            return self._read(statement, running)

    def _read(self, statement: Executable, running: _Running) -> list[Row[Any]]:
        with self.engine.connect() as connection:
            running.started(connection.connection.dbapi_connection)
            try:
                return list(connection.execute(statement).all())
            finally:
                running.finished()

    async def all(self, statement: Executable) -> list[Row[Any]]:
        """The rows of ``statement``. Cancelled, it cancels the query in the server too: a
        read whose client went away, or that outlived its deadline or the process's
        shutdown, stops costing the database and frees its worker thread."""
        loop = asyncio.get_running_loop()
        running = _Running()
        try:
            return await loop.run_in_executor(self.executor, self._all, statement, running)
        except asyncio.CancelledError:
            # The cancel request is network I/O: sent from a thread, not awaited.
            loop.run_in_executor(None, running.cancel)
            raise

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.engine.dispose()


class _Running:
    """The connection one read runs on, so that another thread can cancel that read, and
    only that read: the lock keeps a cancel from reaching the connection once it has gone
    back to the pool for another read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Any = None
        self._cancelled = False

    def started(self, connection: Any) -> None:
        with self._lock:
            if self._cancelled:  # cancelled while it waited for a worker thread
                raise asyncio.CancelledError
            self._connection = connection

    def finished(self) -> None:
        with self._lock:
            self._connection = None

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._connection is not None:
                # libpq's cancel request, on a socket of its own: the worker's execute fails
                # with QueryCanceled and its thread is free again.
                self._connection.cancel_safe(timeout=5)
