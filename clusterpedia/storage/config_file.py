"""The original's storage config file (``internalstorage-config.yaml``), read field by
field: every field is honoured or refused at start with its name and the reason (README,
"Storage"), never dropped::

    type: postgres          # postgres | mysql | sqlite | sqlite3
    host: db.example        # with network: unix, the socket's path
    port: 5432
    user: clusterpedia
    database: clusterpedia
    passwordFile: /etc/clusterpedia/db-password   # ours; or DB_PASSWORD, or password
    sslMode: verify-full
    sslRootCertFile: /etc/clusterpedia/db-ca.crt
    connPool: {maxIdleConns: 10, maxOpenConns: 40, connMaxLifetime: 1h}
    log: {slowThreshold: 100ms, stdout: true}
    # dsn: in the driver's own syntax; it wins over the address fields
    readReplica: {host: db-replica.example}   # ours: a read replica; other fields inherited

The password comes from ``DB_PASSWORD``, then ``passwordFile``, then ``password``.
"""

from __future__ import annotations

import math
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from clusterpedia.storage.dsn import go_duration, mysql_dsn, postgres_dsn, sqlalchemy_url
from clusterpedia.storage.engine import StorageURLError, async_url
from clusterpedia.storage.sql_log import LEVELS, RotatedFile, SQLLog
from clusterpedia.storage.target import StorageTarget

DEFAULT_SQLITE_FILE = "clusterpedia.sqlite"
_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
_PG_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# The original's MySQL modes (its configTLS): what each one checks of the server.
_MYSQL_SSL_MODES = {
    "": "off",
    "false": "off",
    "disable": "off",
    "skip-verify": "unverified",
    "allow": "unverified",
    "prefer": "unverified",
    "require": "verify-ca",  # with a root file or the system's roots (ours checks either)
    "verify-ca": "verify-ca",
    "verify-full": "verify-full",
}


class _Fields:
    """One mapping of the config file: typed reads, and a refusal of every key not read."""

    def __init__(self, data: object, where: str):
        if not isinstance(data, Mapping):
            raise StorageURLError(f"storage config {where or 'file'} must be a mapping of fields")
        self.data, self.where = data, where
        self.read: set[str] = set()

    def get(self, key: str) -> Any:
        self.read.add(key)
        return self.data.get(key)

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def text(self, key: str, default: str = "") -> str:
        value = self.get(key)
        return default if value is None else str(value)

    def integer(self, key: str) -> int | None:
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not str(value).isdigit():
            raise StorageURLError(f"storage config {self.name(key)}: {value!r} is not a number")
        return int(value)

    def flag(self, key: str) -> bool | None:
        value = self.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise StorageURLError(f"storage config {self.name(key)}: {value!r} is not true or false")

    def seconds(self, key: str) -> float | None:
        value = self.get(key)
        return None if value is None else go_duration(value, self.name(key))

    def section(self, key: str) -> _Fields | None:
        value = self.get(key)
        return None if value is None else _Fields(value, self.name(key))

    def strings(self, key: str) -> dict[str, str]:
        value = self.get(key) or {}
        if not isinstance(value, Mapping):
            raise StorageURLError(f"storage config {self.name(key)} must be a mapping")
        return {str(k): str(v) for k, v in value.items()}

    def done(self) -> None:
        unknown = sorted(str(key) for key in self.data if key not in self.read)
        if unknown:
            raise StorageURLError(
                f"storage config: unknown field {self.name(unknown[0])!r} "
                "(a typo, or a field of a newer original); nothing was ignored, so start failed"
            )


class _Build:
    """What the fields add up to, filled in as they are read."""

    def __init__(self) -> None:
        self.query: dict[str, str] = {}
        self.connect_args: dict[str, Any] = {}
        self.options: dict[str, Any] = {}
        self.transient: list[str | int] = []
        self.notices: list[str] = []
        self.tls = ""

    def refuse(self, name: str, why: str) -> None:
        raise StorageURLError(f"storage config {name}: {why}")


def _readable(base: Path, value: str, name: str) -> str:
    path = Path(value)
    path = path if path.is_absolute() else base / path
    if not os.access(path, os.R_OK):
        raise StorageURLError(f"storage config {name}: cannot read {path}")
    return str(path)


def _password(fields: _Fields, environ: Mapping[str, str], base: Path) -> str | None:
    password_file, password = fields.text("passwordFile"), fields.get("password")
    if environ.get("DB_PASSWORD"):
        return environ["DB_PASSWORD"]
    if password_file:
        path = Path(password_file)
        path = path if path.is_absolute() else base / path
        try:
            return path.read_text().strip()
        except OSError as error:
            raise StorageURLError(f"cannot read passwordFile {path}: {error.strerror}") from None
    return None if password is None else str(password)


def _tls_files(fields: _Fields, base: Path) -> tuple[str, str, str]:
    root, cert, key = (fields.text(k) for k in ("sslRootCertFile", "sslCertFile", "sslKeyFile"))
    if bool(cert) != bool(key):
        raise StorageURLError("storage config: sslCertFile and sslKeyFile go together")
    return (
        _readable(base, root, "sslRootCertFile") if root else "",
        _readable(base, cert, "sslCertFile") if cert else "",
        _readable(base, key, "sslKeyFile") if key else "",
    )


def _postgres_tls(mode: str, files: tuple[str, str, str], build: _Build) -> None:
    """libpq does TLS itself: the fields become its connection parameters."""
    if mode and mode not in _PG_SSL_MODES:
        build.refuse(
            "sslMode", f"{mode!r} is not a PostgreSQL sslmode ({', '.join(_PG_SSL_MODES)})"
        )
    root, cert, key = files
    for name, value in (
        ("sslmode", mode),
        ("sslrootcert", root),
        ("sslcert", cert),
        ("sslkey", key),
    ):
        if value:
            build.query[name] = value


def _mysql_tls(mode: str, files: tuple[str, str, str], build: _Build) -> None:
    """The original's modes as an ssl context for the driver; verification with no root
    file uses the system's roots."""
    if mode not in _MYSQL_SSL_MODES:
        build.refuse(
            "sslMode", f"{mode!r} is not one of {', '.join(m for m in _MYSQL_SSL_MODES if m)}"
        )
    check = _MYSQL_SSL_MODES[mode]
    root, cert, key = files
    if check == "off":
        if root or cert:
            build.refuse("sslMode", "TLS files are given but sslMode leaves TLS off")
        return
    build.tls = mode
    tls: dict[str, Any] = {}
    if check == "unverified":
        tls.update(verify_mode="none", check_hostname=False)
    else:
        system = ssl.get_default_verify_paths()
        if root:
            tls["ca"] = root
        elif system.cafile:
            tls["ca"] = system.cafile
        else:
            tls["capath"] = system.capath
        tls.update(verify_mode="required", check_hostname=check == "verify-full")
    if cert:
        tls.update(cert=cert, key=key)
    build.connect_args["ssl"] = tls


def _pool(fields: _Fields | None, build: _Build) -> None:
    if fields is None:
        return
    idle, most, lifetime = (
        fields.integer("maxIdleConns"),
        fields.integer("maxOpenConns"),
        fields.seconds("connMaxLifetime"),
    )
    fields.done()
    idle = idle or 5  # the original's defaults for a field left out
    most = most or 40
    if most < idle:
        build.refuse("connPool", f"maxIdleConns ({idle}) is bigger than maxOpenConns ({most})")
    build.options.update(pool_size=idle, max_overflow=most - idle)
    if lifetime is not None:
        build.options["pool_recycle"] = int(lifetime) if lifetime > 0 else -1


def _sql_log(fields: _Fields | None, build: _Build, base: Path) -> SQLLog | None:
    if fields is None:
        return None
    level = fields.text("level", "Warn")
    if level not in LEVELS:
        build.refuse("log.level", f"{level!r} is not one of {', '.join(LEVELS)}")
    if fields.flag("colorful"):
        build.refuse("log.colorful", "coloured output is not supported; remove it")
    if fields.flag("ignoreRecordNotFoundError") is False:
        build.notices.append(
            "log.ignoreRecordNotFoundError: false has no effect: "
            "a missing object is not a SQL error here"
        )
    slow = fields.seconds("slowThreshold")
    stdout = bool(fields.flag("stdout"))
    file = RotatedFile()
    rolling = fields.section("logger")
    if rolling is not None:
        filename = rolling.text("filename", file.filename)
        file = RotatedFile(
            filename=filename if Path(filename).is_absolute() else str(base / filename),
            max_megabytes=rolling.integer("maxsize") or file.max_megabytes,
            max_backups=rolling.integer("maxbackups") or 0,
            max_age_days=rolling.integer("maxage") or 0,
            local_time=bool(rolling.flag("localtime")),
            compress=bool(rolling.flag("compress")),
        )
        rolling.done()
    fields.done()
    return SQLLog(level=level, slow_seconds=0.2 if slow is None else slow, stdout=stdout, file=file)


def _mysql_section(fields: _Fields | None, build: _Build) -> None:
    """go-sql-driver's options: each one mapped to asyncmy's, or refused."""
    if fields is None:
        return
    for key, argument in (("dialTimeout", "connect_timeout"), ("readTimeout", "read_timeout")):
        seconds = fields.seconds(key)
        if seconds is not None:
            build.connect_args[argument] = max(1, math.ceil(seconds))
    if fields.seconds("writeTimeout") is not None:
        build.notices.append(
            "mysql.writeTimeout has no effect: the driver (asyncmy) has no write timeout"
        )
    packet = fields.integer("maxAllowedPacket")
    if packet:
        build.connect_args["max_allowed_packet"] = packet
    location = fields.text("loc")
    if location and location != "UTC":
        build.refuse("mysql.loc", f"{location!r}: times are stored in UTC; use UTC or remove it")
    if fields.text("serverPubKey"):
        build.refuse(
            "mysql.serverPubKey", "names a key registered in Go code; use TLS (sslMode) instead"
        )
    refused_when = {
        "allowAllFiles": True,
        "allowCleartextPasswords": True,
        "allowOldPasswords": True,
        "allowNativePasswords": False,
        "clientFoundRows": False,
        "columnsWithAlias": True,
        "multiStatements": True,
        "rejectReadOnly": True,
    }
    for key, refused in refused_when.items():
        if fields.flag(key) is refused:
            build.refuse(f"mysql.{key}", f"{str(refused).lower()} is not supported; remove it")
    liveness = fields.flag("checkConnLiveness")
    if liveness is not None:
        build.options["pool_pre_ping"] = liveness
    if fields.flag("parseTime") is False:
        build.notices.append(
            "mysql.parseTime: false has no effect (as in the original): times are parsed"
        )
    if fields.flag("interpolateParams") is not None:
        build.notices.append(
            "mysql.interpolateParams has no effect: the driver always sends parameters"
        )
    numbers = fields.get("recoverableErrNumbers") or []
    if not isinstance(numbers, list) or not all(isinstance(n, int) for n in numbers):
        build.refuse("mysql.recoverableErrNumbers", "must be a list of error numbers")
    build.transient.extend(numbers)
    fields.done()


def _postgres_section(fields: _Fields | None, build: _Build) -> None:
    if fields is None:
        return
    codes = fields.get("recoverableErrCodes") or []
    if not isinstance(codes, list):
        build.refuse("postgres.recoverableErrCodes", "must be a list of SQLSTATE codes")
    build.transient.extend(str(code) for code in codes)
    fields.done()


def _mysql_params(params: Mapping[str, str], build: _Build) -> None:
    """As go-sql-driver does: ``charset`` picks the connection's character set, every
    other parameter is a session variable set on connect."""
    assignments = []
    for key, value in params.items():
        if key == "charset":
            build.query["charset"] = value.split(",")[0]
        elif key.replace("_", "").isalnum():
            assignments.append(f"{key}={value}")
        else:
            build.refuse("params", f"{key!r} is not a variable name")
    if assignments:
        build.connect_args["init_command"] = "SET " + ", ".join(assignments)


# The character sets MySQL and MariaDB name collations after (``<charset>_<rest>``), as
# go-sql-driver checks a DSN's collation against the collations it knows before using it.
_CHARSETS = frozenset(
    {
        "armscii8", "ascii", "big5", "binary", "cp1250", "cp1251", "cp1256", "cp1257", "cp850",
        "cp852", "cp866", "cp932", "dec8", "eucjpms", "euckr", "gb18030", "gb2312", "gbk",
        "geostd8", "greek", "hebrew", "hp8", "keybcs2", "koi8r", "koi8u", "latin1", "latin2",
        "latin5", "latin7", "macce", "macroman", "sjis", "swe7", "tis620", "ucs2", "ujis",
        "utf16", "utf16le", "utf32", "utf8", "utf8mb3", "utf8mb4",
    }
)  # fmt: skip
_COLLATION = re.compile(r"(?P<charset>[a-z0-9]+)(_[a-z0-9]+)+|binary")


def _collation(value: str) -> str:
    """A DSN's ``collation``: a collation name of a known character set, never text that
    could end the ``SET collation_connection='...'`` it goes into."""
    match = _COLLATION.fullmatch(value.lower())
    charset = match.group("charset") if match else None
    if match is None or (charset is not None and charset not in _CHARSETS):
        raise StorageURLError(
            f"storage config dsn: collation={value[:64]!r} is not a MySQL collation"
        )
    return value.lower()


def _from_mysql_dsn(text: str) -> tuple[URL, dict[str, Any]]:
    """A go-sql-driver DSN, with its parameters as the equivalent config fields."""
    url, params = mysql_dsn(text)
    tls = params.pop("tls", None)
    extra: dict[str, Any] = {"mysql": {}, "params": {}}
    if tls is not None:
        modes = {
            "true": "verify-full",
            "skip-verify": "skip-verify",
            "preferred": "skip-verify",
            "false": "disable",
        }
        if tls not in modes:
            raise StorageURLError(
                f"storage config dsn: tls={tls!r} names a Go TLS config; use sslMode"
            )
        extra["sslMode"] = modes[tls]
    renamed = {"timeout": "dialTimeout"}
    options = {"dialTimeout", "readTimeout", "writeTimeout", "loc", "maxAllowedPacket"}
    flags = {
        "allowAllFiles",
        "allowCleartextPasswords",
        "allowNativePasswords",
        "allowOldPasswords",
        "checkConnLiveness",
        "clientFoundRows",
        "columnsWithAlias",
        "interpolateParams",
        "multiStatements",
        "parseTime",
        "rejectReadOnly",
    }
    for key, value in params.items():
        key = renamed.get(key, key)
        if key in flags:
            extra["mysql"][key] = value.lower() in ("true", "1")
        elif key in options:
            extra["mysql"][key] = (
                int(value) if key == "maxAllowedPacket" and value.isdigit() else value
            )
        elif key == "collation":
            extra["params"]["collation_connection"] = f"'{_collation(value)}'"
        else:
            extra["params"][key] = value
    return url, extra


def _url_and_fields(
    fields: _Fields, kind: str, environ: Mapping[str, str], base: Path
) -> tuple[URL, dict[str, Any]]:
    """The URL the address fields (or the dsn) give, and fields a dsn implies."""
    dsn = fields.text("dsn")
    network, host, port = fields.text("network", "tcp"), fields.text("host"), fields.integer("port")
    user, database = fields.text("user"), fields.text("database")
    password = _password(fields, environ, base)
    if network not in ("tcp", "unix"):
        raise StorageURLError(f"storage config network: {network!r} is not tcp or unix")
    extra: dict[str, Any] = {}
    if dsn:
        url = sqlalchemy_url(dsn)
        if url is None and kind in ("mysql", "mariadb"):
            url, extra = _from_mysql_dsn(dsn)
        elif url is None and kind in ("postgres", "postgresql"):
            url = postgres_dsn(dsn)
        elif url is None and kind in ("sqlite", "sqlite3"):
            url = make_url(f"sqlite:///{dsn}")
        elif url is None:
            raise StorageURLError(f"storage config dsn {dsn!r} is not a URL; set type to read it")
        if password and url.password is None and url.get_backend_name() != "sqlite":
            url = url.set(password=password)
        return url, extra
    if kind in ("sqlite", "sqlite3"):
        return make_url(f"sqlite:///{database or DEFAULT_SQLITE_FILE}"), extra
    if kind not in _DRIVERS:
        raise StorageURLError(
            f"storage config type {kind!r} is not supported; use postgres, mysql or sqlite"
        )
    for name, value in (("host", host), ("database", database)):
        if not value:
            raise StorageURLError(f"storage config needs {name!r} for type {kind}")
    query: dict[str, str] = {}
    if network == "unix":  # host is the socket: libpq takes its directory, asyncmy its path
        query = {"host": host} if kind.startswith("postgres") else {"unix_socket": host}
    url = URL.create(
        _DRIVERS[kind],
        username=user or None,
        password=password,
        host=None if network == "unix" else host,
        port=port,
        database=database,
        query=query,
    )
    return url, extra


def target_from_config(config: object, *, environ: Mapping[str, str], base: Path) -> StorageTarget:
    """What a parsed config file describes; raises StorageURLError for a field it cannot
    honour.

    ``readReplica`` (ours) holds the fields in which a read replica differs from the primary,
    usually ``host`` and ``port``; it inherits every other field."""
    if not isinstance(config, Mapping) or "readReplica" not in config:
        return _target(config, environ=environ, base=base)
    primary = {key: value for key, value in config.items() if key != "readReplica"}
    overrides = config["readReplica"]
    if not isinstance(overrides, Mapping):
        raise StorageURLError("storage config readReplica must be a mapping of fields")
    for key in ("type", "readReplica"):
        if key in overrides:
            raise StorageURLError(
                f"storage config readReplica.{key}: a replica is of its primary's type"
            )
    replica = {**primary, **overrides}
    if "dsn" not in overrides and {"host", "port", "network"} & set(overrides):
        replica.pop("dsn", None)  # the primary's dsn would win over the replica's address
    target = _target(primary, environ=environ, base=base)
    return replace(target, read=_target(replica, environ=environ, base=base))


def _target(config: object, *, environ: Mapping[str, str], base: Path) -> StorageTarget:
    fields = _Fields(config, "")
    kind = fields.text("type").lower()
    url, implied = _url_and_fields(fields, kind, environ, base)
    backend = async_url(url).get_backend_name()
    build = _Build()
    mode = str(implied.get("sslMode", fields.text("sslMode")))
    files = _tls_files(fields, base)
    params = {**fields.strings("params"), **implied.get("params", {})}
    mysql = fields.section("mysql")
    if implied.get("mysql"):
        mysql = _Fields({**(mysql.data if mysql else {}), **implied["mysql"]}, "mysql")
    postgres = fields.section("postgres")
    if fields.get("nebula") is not None:
        build.refuse("nebula", "Nebula Graph is not supported")
    if backend == "postgresql":
        _postgres_tls(mode, files, build)
        build.query.update(params)
        if mysql is not None:
            build.refuse("mysql", "applies to type mysql, not postgres")
        _postgres_section(postgres, build)
    elif backend == "mysql":
        _mysql_tls(mode, files, build)
        _mysql_params(params, build)
        if postgres is not None:
            build.refuse("postgres", "applies to type postgres, not mysql")
        _mysql_section(mysql, build)
    else:
        for name, given in (
            ("sslMode", mode),
            ("params", params),
            ("mysql", mysql),
            ("postgres", postgres),
        ):
            if given:
                build.refuse(name, "does not apply to SQLite")
        if any(files):
            build.refuse("sslRootCertFile", "TLS does not apply to SQLite")
    _pool(fields.section("connPool"), build)
    sql_log = _sql_log(fields.section("log"), build, base)
    fields.done()
    if build.query:
        url = url.update_query_dict(build.query)
    options = dict(build.options)
    if build.connect_args:
        options["connect_args"] = build.connect_args
    return StorageTarget(
        url=url.render_as_string(hide_password=False),
        engine_options=options,
        sql_log=sql_log,
        transient_codes=tuple(build.transient),
        notices=tuple(build.notices),
        tls=build.tls,
    )
