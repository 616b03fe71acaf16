"""Storage URL precedence and the storage config file."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from clusterpedia.storage.config import (
    StorageTarget,
    describe,
    resolve_storage,
    resolve_storage_url,
    target_from_config,
)
from clusterpedia.storage.dsn import go_duration
from clusterpedia.storage.engine import StorageURLError
from clusterpedia.storage.sql_log import RotatedFile, SQLLog


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


# -- the original's fields, each honoured or refused -----------------------------------------


def target(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> StorageTarget:
    return resolve_storage(config_file=write(tmp_path / "c.yaml", text), environ=environ or {})


def pem_files(tmp_path: Path) -> tuple[str, str, str]:
    names = ("ca.crt", "client.crt", "client.key")
    for name in names:
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    return names


def test_postgres_tls_fields_become_libpq_parameters(tmp_path: Path) -> None:
    ca, cert, key = pem_files(tmp_path)
    found = target(
        tmp_path,
        "type: postgres\nhost: db\ndatabase: cp\nsslMode: verify-full\n"
        f"sslRootCertFile: {ca}\nsslCertFile: {cert}\nsslKeyFile: {key}\n",
    )
    query = make_url(found.url).query
    assert query["sslmode"] == "verify-full"
    assert (query["sslrootcert"], query["sslcert"], query["sslkey"]) == tuple(
        str(tmp_path / name) for name in (ca, cert, key)
    )


def test_mysql_tls_modes_become_an_ssl_context_that_checks_what_the_mode_says(
    tmp_path: Path,
) -> None:
    ca, cert, key = pem_files(tmp_path)
    base = "type: mysql\nhost: db\ndatabase: cp\n"

    def tls(extra: str) -> dict[str, object] | None:
        found = target(tmp_path, base + extra)
        return found.engine_options.get("connect_args", {}).get("ssl")

    assert tls("") is None and tls("sslMode: disable\n") is None
    assert tls("sslMode: skip-verify\n") == {"verify_mode": "none", "check_hostname": False}
    assert tls(f"sslMode: verify-full\nsslRootCertFile: {ca}\n") == {
        "ca": str(tmp_path / ca),
        "verify_mode": "required",
        "check_hostname": True,
    }
    verify_ca = tls(f"sslMode: verify-ca\nsslCertFile: {cert}\nsslKeyFile: {key}\n")
    assert verify_ca is not None and verify_ca["check_hostname"] is False
    assert verify_ca["verify_mode"] == "required" and ("ca" in verify_ca or "capath" in verify_ca)
    assert verify_ca["cert"] == str(tmp_path / cert)
    assert target(tmp_path, base + "sslMode: require\n").describe().endswith("(sslMode require)")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("sslMode: verify-everything\n", "not one of"),
        ("sslMode: verify-full\nsslRootCertFile: /nonexistent/ca.crt\n", "cannot read"),
        ("sslMode: require\nsslCertFile: client.crt\n", "go together"),
        ("sslMode: disable\nsslRootCertFile: ca.crt\n", "leaves TLS off"),
        ("sslmode: require\n", "unknown field 'sslmode'"),
        ("connPool: {maxIdleConns: 50, maxOpenConns: 10}\n", "bigger than maxOpenConns"),
        ("connPool: {maxIdle: 5}\n", "unknown field 'connPool.maxIdle'"),
        ("connPool: {connMaxLifetime: an hour}\n", "not a duration"),
        ("log: {level: Verbose}\n", "not one of Silent"),
        ("log: {colorful: true}\n", "coloured output"),
        ("log: {logger: {filename: x.log, rotate: daily}}\n", "'log.logger.rotate'"),
        ("mysql: {multiStatements: true}\n", "mysql.multiStatements"),
        ("mysql: {loc: Asia/Shanghai}\n", "stored in UTC"),
        ("mysql: {serverPubKey: mykey}\n", "registered in Go"),
        ("mysql: {recoverableErrNumbers: [x]}\n", "list of error numbers"),
        ("postgres: {recoverableErrCodes: [40001]}\n", "applies to type postgres"),
        ("nebula: {timeOut: 1s}\n", "Nebula Graph"),
        ("params: {'bad name': 1}\n", "not a variable name"),
    ],
)
def test_a_field_that_cannot_be_honoured_is_refused_by_name(
    tmp_path: Path, extra: str, message: str
) -> None:
    pem_files(tmp_path)
    with pytest.raises(StorageURLError, match=message):
        target(tmp_path, "type: mysql\nhost: db\ndatabase: cp\n" + extra)


def test_pool_log_and_recoverable_errors(tmp_path: Path) -> None:
    found = target(
        tmp_path,
        "type: postgres\nhost: db\ndatabase: cp\n"
        "connPool: {maxIdleConns: 10, maxOpenConns: 100, connMaxLifetime: 1h30m}\n"
        "log:\n  level: Info\n  slowThreshold: 100ms\n"
        "  logger: {filename: sql.log, maxsize: 5, maxbackups: 3, maxage: 7, compress: true}\n"
        "postgres: {recoverableErrCodes: ['55P03']}\n"
        "params: {application_name: pedia}\n",
    )
    assert found.engine_options == {"pool_size": 10, "max_overflow": 90, "pool_recycle": 5400}
    assert found.sql_log == SQLLog(
        level="Info",
        slow_seconds=0.1,
        file=RotatedFile(
            filename=str(tmp_path / "sql.log"),
            max_megabytes=5,
            max_backups=3,
            max_age_days=7,
            compress=True,
        ),
    )
    assert found.transient_codes == ("55P03",)
    assert make_url(found.url).query["application_name"] == "pedia"


def test_mysql_options_map_to_the_driver_or_are_said_to_do_nothing(tmp_path: Path) -> None:
    found = target(
        tmp_path,
        "type: mysql\nhost: db\ndatabase: cp\n"
        "params: {charset: utf8mb4, time_zone: \"'+00:00'\"}\n"
        "mysql:\n  dialTimeout: 3s\n  readTimeout: 1m\n  writeTimeout: 10s\n"
        "  maxAllowedPacket: 4194304\n  parseTime: false\n  checkConnLiveness: false\n"
        "  recoverableErrNumbers: [1927]\n",
    )
    assert found.engine_options["connect_args"] == {
        "init_command": "SET time_zone='+00:00'",
        "connect_timeout": 3,
        "read_timeout": 60,
        "max_allowed_packet": 4194304,
    }
    assert found.engine_options["pool_pre_ping"] is False
    assert make_url(found.url).query["charset"] == "utf8mb4"
    assert found.transient_codes == (1927,)
    assert [n.split(" ")[0] for n in found.notices] == ["mysql.writeTimeout", "mysql.parseTime:"]


def test_the_originals_dsn_forms(tmp_path: Path) -> None:
    mysql = target(
        tmp_path,
        "type: mysql\ndsn: 'root:p%40ss@tcp(db.example:3307)/pedia?parseTime=true&tls=true"
        "&timeout=5s&collation=utf8mb4_bin'\n",
    )
    url = make_url(mysql.url)
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "root",
        "p@ss",
        "db.example",
        3307,
        "pedia",
    )
    assert mysql.tls == "verify-full"
    assert mysql.engine_options["connect_args"]["connect_timeout"] == 5
    assert mysql.engine_options["connect_args"]["init_command"] == (
        "SET collation_connection='utf8mb4_bin'"
    )
    socket = make_url(target(tmp_path, "type: mysql\ndsn: 'u@unix(/run/my.sock)/d'\n").url)
    assert socket.query["unix_socket"] == "/run/my.sock"
    words = target(
        tmp_path,
        "type: postgres\ndsn: 'host=db port=5433 user=u dbname=pedia sslmode=verify-ca'\n",
        {"DB_PASSWORD": "pw"},
    )
    assert words.url == "postgresql+psycopg://u:pw@db:5433/pedia?sslmode=verify-ca"
    pgx_url = target(tmp_path, "type: postgres\ndsn: 'postgres://u@db/pedia?sslmode=require'\n")
    assert pgx_url.url == "postgres://u@db/pedia?sslmode=require"  # read as psycopg's
    sqlite = target(tmp_path, "type: sqlite\ndsn: /var/lib/pedia.db\n")
    assert sqlite.url == "sqlite:////var/lib/pedia.db"
    with pytest.raises(StorageURLError, match="names a Go TLS config"):
        target(tmp_path, "type: mysql\ndsn: 'u@tcp(h)/d?tls=custom'\n")


@pytest.mark.parametrize(
    "collation",
    ["utf8mb4_bin%27%2C%20sql_mode%3D%27", "utf8mb4_bin%27", "nonesuch_ci", "utf8mb4 bin", "x"],
)
def test_a_dsn_collation_is_a_known_collation(tmp_path: Path, collation: str) -> None:
    """It goes into ``SET collation_connection='...'``: nothing else may ride along."""
    with pytest.raises(StorageURLError, match="is not a MySQL collation"):
        target(tmp_path, f"type: mysql\ndsn: 'u@tcp(h)/d?collation={collation}'\n")


def test_unix_sockets_by_network(tmp_path: Path) -> None:
    pg = target(tmp_path, "type: postgres\nnetwork: unix\nhost: /run/postgresql\ndatabase: d\n")
    assert make_url(pg.url).query["host"] == "/run/postgresql"
    my = target(tmp_path, "type: mysql\nnetwork: unix\nhost: /run/mysqld.sock\ndatabase: d\n")
    assert make_url(my.url).query["unix_socket"] == "/run/mysqld.sock"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h", 3600), ("1h30m", 5400), ("100ms", 0.1), ("1.5s", 1.5), (90, 90), ("0", 0)],
)
def test_go_durations(text: object, seconds: float) -> None:
    assert go_duration(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize("variant", ["base", "variants/postgresql", "variants/mysql"])
def test_the_shipped_storage_configs_resolve(variant: str) -> None:
    import yaml

    root = Path(__file__).resolve().parents[2] / "manifests"
    documents = yaml.safe_load_all((root / variant / "storage.yaml").read_text())
    configmap = next(d for d in documents if d and d.get("kind") == "ConfigMap")
    found = target_from_config(
        yaml.safe_load(configmap["data"]["storage.yaml"]),
        environ={"DB_PASSWORD": "secret"},
        base=root,
    )
    assert found.url and found.notices == ()


def test_read_replica_from_flag_or_environment_inherits_the_primarys_options(
    tmp_path: Path,
) -> None:
    config = write(
        tmp_path / "c.yaml",
        "type: mysql\nhost: db\nuser: cp\ndatabase: pedia\nconnPool: {maxOpenConns: 7}\n",
    )
    target = resolve_storage(config_file=config, read_flag="mysql+pymysql://cp@db-ro/pedia")
    assert target.read is not None
    assert make_url(target.read.url).host == "db-ro"
    assert target.read.engine_options == target.engine_options  # the same pool, TLS
    assert target.read.read is None
    assert target.describe().endswith("reads from mysql+pymysql://cp@db-ro/pedia")
    environ = {"CLUSTERPEDIA_READ_STORAGE_URL": "postgresql+psycopg://u@standby/p"}
    from_env = resolve_storage(flag="postgresql+psycopg://u@primary/p", environ=environ)
    assert from_env.read is not None and "standby" in from_env.read.url
    assert resolve_storage(flag="postgresql+psycopg://u@primary/p", environ={}).read is None


def test_read_replica_section_of_the_config_file(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        "type: postgres\nhost: db\nport: 5432\nuser: cp\ndatabase: pedia\npassword: pw\n"
        "sslMode: require\nreadReplica: {host: db-standby, port: 5433}\n",
    )
    target = resolve_storage(config_file=config, environ={})
    assert target.read is not None
    primary, replica = make_url(target.url), make_url(target.read.url)
    assert (primary.host, primary.port) == ("db", 5432)
    assert (replica.host, replica.port, replica.username, replica.password) == (
        "db-standby",
        5433,
        "cp",
        "pw",
    )
    assert replica.query["sslmode"] == "require"  # inherited
    # An address in the replica's section replaces the primary's dsn rather than losing to it.
    with_dsn = write(
        tmp_path / "d.yaml",
        "type: postgres\ndsn: postgresql://cp@db/pedia\nreadReplica: {host: ro, database: pedia}\n",
    )
    read = resolve_storage(config_file=with_dsn, environ={}).read
    assert read is not None and make_url(read.url).host == "ro"


@pytest.mark.parametrize(
    ("primary", "replica", "message"),
    [
        ("sqlite:///x.db", "sqlite:///y.db", "not SQLite"),
        ("postgresql+psycopg://u@h/p", "mysql+pymysql://u@h/p", "primary's kind"),
        ("postgresql+psycopg://u@h/p", "postgresql+psycopg://u@h/p", "the primary itself"),
        ("postgresql+psycopg://u@h/p", "oracle://u@h/p", "oracle"),
    ],
)
def test_read_replicas_that_cannot_work_are_refused(
    primary: str, replica: str, message: str
) -> None:
    with pytest.raises(StorageURLError, match=message):
        resolve_storage(flag=primary, read_flag=replica, environ={})


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("readReplica: db2", "must be a mapping"),
        ("readReplica: {type: mysql}", "readReplica.type"),
        ("readReplica: {hots: db2}", "unknown field 'hots'"),
    ],
)
def test_bad_read_replica_sections(tmp_path: Path, section: str, message: str) -> None:
    config = write(tmp_path / "c.yaml", f"type: postgres\nhost: db\ndatabase: pedia\n{section}\n")
    with pytest.raises(StorageURLError, match=message):
        resolve_storage(config_file=config, environ={})
