"""The original's connection strings and durations, read as it reads them.

Its config file takes a ``dsn`` in each driver's own syntax (go-sql-driver's
``user:pass@tcp(host:port)/db?k=v``, pgx's URL or ``key=value`` form, a SQLite path) and
durations in Go's syntax (``1h30m``, ``100ms``). A migrating user's ConfigMap keeps them.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from clusterpedia.storage.engine import StorageURLError

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_MYSQL_DSN = re.compile(
    r"^(?:(?P<user>[^:@/]*)(?::(?P<password>[^@]*))?@)?"
    r"(?:(?P<net>[a-z]+)(?:\((?P<address>[^)]*)\))?)?"
    r"/(?P<database>[^?]*)(?:\?(?P<params>.*))?$"
)


def go_duration(value: object, field: str) -> float:
    """Seconds of a Go duration (``"1h"``, ``"1m30s"``, ``"250ms"``); a bare number is
    seconds, as YAML users write it."""
    if isinstance(value, bool):
        raise StorageURLError(f"storage config {field}: {value!r} is not a duration")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text in ("0", ""):
        return 0.0
    position, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        raise StorageURLError(
            f"storage config {field}: {text!r} is not a duration (write it as 1h, 30m, 100ms)"
        )
    return seconds


def sqlalchemy_url(text: str) -> URL | None:
    """``text`` as a SQLAlchemy URL, or None when it is not one."""
    if "://" not in text:
        return None
    try:
        return make_url(text)
    except ArgumentError:
        return None


def mysql_dsn(text: str) -> tuple[URL, dict[str, str]]:
    """A go-sql-driver DSN as a URL, and its parameters (the caller decides what each
    means)."""
    match = _MYSQL_DSN.match(text)
    if match is None:
        raise StorageURLError(
            "storage config dsn is not a MySQL DSN (user:password@tcp(host:port)/database)"
        )
    net, address = match.group("net") or "tcp", match.group("address") or ""
    host, port, socket = None, None, None
    if net == "unix":
        socket = address or "/tmp/mysql.sock"
    elif net == "tcp":
        host, _, port_text = address.rpartition(":") if ":" in address else (address, "", "")
        if not port_text.isdigit() and port_text:
            raise StorageURLError(f"storage config dsn: bad port in {address!r}")
        port = int(port_text) if port_text else None
    else:
        raise StorageURLError(f"storage config dsn: network {net!r} is not supported (tcp, unix)")
    url = URL.create(
        "mysql+pymysql",
        username=unquote(match.group("user")) if match.group("user") else None,
        password=unquote(match.group("password")) if match.group("password") else None,
        host=host or ("127.0.0.1" if socket is None else None),
        port=port,
        database=match.group("database"),
        query={"unix_socket": socket} if socket else {},
    )
    return url, dict(parse_qsl(match.group("params") or "", keep_blank_values=True))


def postgres_dsn(text: str) -> URL:
    """A pgx DSN (URL or ``key=value`` words) as a URL; libpq keywords other than the
    address go to the query, where psycopg passes them to libpq."""
    url = sqlalchemy_url(text)
    if url is not None:
        if url.get_backend_name() not in ("postgres", "postgresql"):
            raise StorageURLError(f"storage config dsn {url.drivername!r} is not PostgreSQL")
        return url.set(drivername="postgresql+psycopg")
    from psycopg.conninfo import conninfo_to_dict  # the libpq parser itself

    try:
        words = {k: str(v) for k, v in conninfo_to_dict(text).items()}
    except Exception as error:  # psycopg.ProgrammingError: the words do not parse
        raise StorageURLError(f"storage config dsn does not parse: {error}") from None
    port = words.pop("port", None)
    return URL.create(
        "postgresql+psycopg",
        username=words.pop("user", None),
        password=words.pop("password", None),
        host=words.pop("host", None),
        port=int(port) if port else None,
        database=words.pop("dbname", None),
        query=words,
    )
