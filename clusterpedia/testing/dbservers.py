"""Private database servers a test may restart: PostgreSQL and MariaDB from Debian's packages,
each in a temporary directory on a free loopback port, run as the system's ``postgres`` or
``mysql`` user.

The session's shared servers (started by ``hack/test``) are never restarted: other tests use
them. These exist so that a test can restart a real server under a running product:
``restart()`` stops it the way an administrator would (PostgreSQL: fast shutdown, which ends
every session with ``57P01``; MariaDB: a normal shutdown), waits, and starts it again on the
same port with the same data.

With ``tls`` (a certificate and key in PEM), a server accepts TCP clients over TLS only.
:class:`PrivateStandby` is a streaming replica of a private PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pymysql

from clusterpedia.testing.processes import ManagedProcess, free_port

STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class ServerTLS:
    """The server's certificate chain and private key, PEM."""

    certificate: bytes
    key: bytes


class PrivateServer:
    dialect = ""
    user = ""

    def __init__(self, *, tls: ServerTLS | None = None) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"clusterpedia-{self.dialect}-"))
        shutil.chown(self.workdir, self.user, self.user)
        self.port = free_port()
        self.process: ManagedProcess | None = None
        self.tls = tls
        if tls is not None:  # readable by the server's user only, as both servers demand
            for name, pem in (("server.crt", tls.certificate), ("server.key", tls.key)):
                path = self.workdir / name
                path.write_bytes(pem)
                os.chmod(path, 0o600)
                shutil.chown(path, self.user, self.user)

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _connect(self) -> Any:
        raise NotImplementedError

    def _initialise(self) -> None:
        raise NotImplementedError

    def _setup(self, *argv: str | Path, user: str | None = None) -> None:
        """Run a command that creates the data directory; fail with its output."""
        name = Path(argv[0]).name
        command = ManagedProcess(
            name=name, argv=argv, log_path=self.workdir / f"{name}.log", user=user
        )
        command.start()
        if command.wait(120) != 0:
            raise RuntimeError(f"{name} failed:\n{command.log_tail()}")

    def start(self) -> PrivateServer:
        if not (self.workdir / "data").exists():
            self._initialise()
        self.process = ManagedProcess(
            name=f"{self.dialect} (private)",
            argv=self._argv(),
            log_path=self.workdir / "server.log",
            user=self.user,
            stop_signal=signal.SIGINT if self.dialect == "postgresql" else signal.SIGTERM,
        )
        self.process.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                self._connect().close()
                return self
            except Exception:
                if not self.process.running() or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the private {self.dialect} server did not start:\n"
                        f"{self.process.log_tail()}"
                    ) from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)
            self.process = None

    def restart(self, *, down_for: float) -> None:
        """Stop as an administrator would, stay down ``down_for`` seconds, start again."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrivateServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def client_connections(self) -> int:
        """Client sessions open now (this query's own excluded)."""
        raise NotImplementedError


class PrivatePostgres(PrivateServer):
    dialect, user = "postgresql", "postgres"

    @property
    def _bin(self) -> Path:
        versions = sorted(Path("/usr/lib/postgresql").iterdir(), key=lambda p: int(p.name))
        return versions[-1] / "bin"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://clusterpedia@127.0.0.1:{self.port}/postgres"

    def _initialise(self) -> None:
        self._setup(
            self._bin / "initdb", "-D", self.workdir / "data", "-U", "clusterpedia",
            "-A", "trust", "--no-sync", user=self.user,
        )  # fmt: skip
        if self.tls is not None:  # TCP over TLS only: a plaintext client finds no entry
            hba = self.workdir / "data" / "pg_hba.conf"
            hba.write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n")

    def _argv(self) -> list[str]:
        return [
            str(self._bin / "postgres"),
            "-D", str(self.workdir / "data"),
            "-p", str(self.port),
            "-k", str(self.workdir),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off",
            "-c", "max_connections=200",
            *self._tls_argv(),
        ]  # fmt: skip

    def _tls_argv(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "-c", "ssl=on",
            "-c", f"ssl_cert_file={self.workdir / 'server.crt'}",
            "-c", f"ssl_key_file={self.workdir / 'server.key'}",
        ]  # fmt: skip

    def _connect(self) -> Any:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="clusterpedia", dbname="postgres",
            connect_timeout=5, autocommit=True,
            sslmode="require" if self.tls else "prefer",
        )  # fmt: skip

    def client_connections(self) -> int:
        with self._connect() as connection:
            row = connection.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
            assert row is not None
            return int(row[0])


class PrivateStandby(PrivatePostgres):
    """A hot standby of ``primary`` by streaming replication: a ``pg_basebackup`` of it with
    ``standby.signal`` and its ``primary_conninfo`` (``-R``), answering read-only queries."""

    def __init__(self, primary: PrivatePostgres) -> None:
        super().__init__()
        self.primary = primary

    def _initialise(self) -> None:
        self._setup(
            self._bin / "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port),
            "-U", "clusterpedia", "-D", self.workdir / "data", "-R", "-X", "stream",
            "--no-sync", user=self.user,
        )  # fmt: skip

    def pause_replay(self) -> None:
        """Stop applying the primary's changes (they still arrive): a replica falling behind."""
        with self._connect() as connection:
            connection.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        with self._connect() as connection:
            connection.execute("SELECT pg_wal_replay_resume()")


class PrivateMariaDB(PrivateServer):
    dialect, user = "mysql", "mysql"

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/clusterpedia"

    def _initialise(self) -> None:
        self._setup(
            "mariadb-install-db", "--no-defaults", f"--datadir={self.workdir / 'data'}",
            f"--user={self.user}", "--skip-test-db", "--auth-root-authentication-method=normal",
        )  # fmt: skip
        shutil.chown(self.workdir / "data", self.user, self.user)

    def _argv(self) -> list[str]:
        return [
            "mariadbd", "--no-defaults",
            f"--datadir={self.workdir / 'data'}",
            f"--socket={self.workdir / 'mysqld.sock'}",
            f"--pid-file={self.workdir / 'mysqld.pid'}",
            f"--port={self.port}", "--bind-address=127.0.0.1",
            "--innodb-flush-log-at-trx-commit=2",
            *self._binlog_argv(),
            # A throwaway server on loopback: root without a password. Skipping the grant
            # tables skips require_secure_transport too, so a TLS server keeps them (its
            # root@localhost has no password either).
            *([] if self.tls else ["--skip-grant-tables"]),
            *self._tls_argv(),
        ]  # fmt: skip

    def _binlog_argv(self) -> list[str]:
        return ["--skip-log-bin"]

    def _tls_argv(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            f"--ssl-cert={self.workdir / 'server.crt'}",
            f"--ssl-key={self.workdir / 'server.key'}",
            "--require-secure-transport=ON",
        ]

    def _connect(self) -> Any:
        connection = pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user="root",
            connect_timeout=5,
            autocommit=True,
            ssl={"check_hostname": False} if self.tls else None,  # this check needs no verify
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE DATABASE IF NOT EXISTS clusterpedia"
                " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )
        return connection

    def client_connections(self) -> int:
        connection = self._connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM information_schema.processlist"
                    " WHERE command <> 'Daemon' AND id <> CONNECTION_ID()"
                )
                (count,) = cursor.fetchone()
                return int(count)
        finally:
            connection.close()


class PrivateMariaDBPrimary(PrivateMariaDB):
    """A MariaDB that writes a row-based binary log, for :class:`PrivateMariaDBReplica`."""

    def _binlog_argv(self) -> list[str]:
        return ["--server-id=1", "--log-bin=binlog", "--binlog-format=ROW"]


class PrivateMariaDBReplica(PrivateMariaDB):
    """A replica of ``primary`` from the start of its binary log (so it must be empty of
    anything written before the primary logged): MariaDB's classic replication."""

    def __init__(self, primary: PrivateMariaDBPrimary) -> None:
        super().__init__()
        self.primary = primary

    def _binlog_argv(self) -> list[str]:
        return ["--server-id=2", "--skip-log-bin", "--relay-log=relay"]

    def start(self) -> PrivateMariaDBReplica:
        super().start()
        self._sql(
            f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={self.primary.port},"
            " MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=no,"
            " MASTER_LOG_FILE='binlog.000001', MASTER_LOG_POS=4",
            "START SLAVE",
        )
        return self

    def pause_replay(self) -> None:
        """Stop applying the primary's changes (they still arrive): a replica falling behind."""
        self._sql("STOP SLAVE SQL_THREAD")

    def resume_replay(self) -> None:
        self._sql("START SLAVE SQL_THREAD")

    def _sql(self, *statements: str) -> None:
        connection = self._connect()
        try:
            with connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            connection.close()
