"""The storage config's TLS fields against real servers that accept TLS only: PostgreSQL
(libpq's sslmode) and MariaDB (require_secure_transport), certificates made here.

verify-full connects to the name on the certificate and refuses another name or another CA;
a config without TLS is refused by the server. Reads, writes and the threaded PostgreSQL
reads all go over the verified connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
import trustme

from clusterpedia.gvr import ResourceType
from clusterpedia.storage import (
    Database,
    Query,
    StorageError,
    TypeFilter,
    resolve_storage,
    upsert_from_object,
)
from clusterpedia.testing.dbservers import PrivateMariaDB, PrivatePostgres, PrivateServer, ServerTLS

pytestmark = pytest.mark.asyncio(loop_scope="module")
CONFIGMAPS = ResourceType("", "v1", "configmaps", "ConfigMap")

# How each server says which connection is encrypted.
_CIPHER = {
    "postgresql": "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    "mysql": "SHOW SESSION STATUS LIKE 'Ssl_cipher'",
}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module", params=["postgresql", "mysql"])
def server(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[PrivateServer]:
    issued = ca.issue_cert("localhost")  # not 127.0.0.1: verify-full must check the name
    tls = ServerTLS(
        certificate=b"".join(blob.bytes() for blob in issued.cert_chain_pems),
        key=issued.private_key_pem.bytes(),
    )
    kind = PrivatePostgres if request.param == "postgresql" else PrivateMariaDB
    with kind(tls=tls) as started:
        yield started


def config(tmp_path: Path, server: PrivateServer, ca: trustme.CA, **fields: str) -> str:
    ca_file = tmp_path / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_file))
    postgres = server.dialect == "postgresql"
    values = {
        "type": "postgres" if postgres else "mysql",
        "host": "localhost",
        "port": str(server.port),
        "user": "clusterpedia" if postgres else "root",
        "database": "postgres" if postgres else "clusterpedia",
        "sslMode": "verify-full",
        "sslRootCertFile": str(ca_file),
        **fields,
    }
    path = tmp_path / "storage.yaml"
    path.write_text("".join(f"{k}: '{v}'\n" for k, v in values.items() if v))
    return str(path)


async def encrypted(database: Database, dialect: str) -> str:
    async with database.engine.connect() as connection:
        row = (await connection.execute(sa.text(_CIPHER[dialect]))).one()
    return str(row[-1])


async def test_verify_full_connects_and_every_path_is_encrypted(
    tmp_path: Path, server: PrivateServer, ca: trustme.CA
) -> None:
    target = resolve_storage(config_file=config(tmp_path, server, ca), environ={})
    database = Database(target.url, **target.database_options())
    try:
        await database.migrate()
        assert (await encrypted(database, server.dialect)) not in ("", "false")
        pod = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "tls", "namespace": "default", "uid": "u-tls"},
        }
        await database.writes.apply(
            cluster="m", rtype=CONFIGMAPS, changes=[upsert_from_object(pod, is_new=True)]
        )
        page = await database.objects.list(
            Query(types=(TypeFilter("", "v1", "configmaps"),), clusters=("m",))
        )
        assert [orjson.loads(item.data)["metadata"]["name"] for item in page.items] == ["tls"]
    finally:
        await database.close()


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"host": "127.0.0.1"}, "the certificate names localhost only"),
        ({"sslMode": "disable", "sslRootCertFile": ""}, "the server takes TLS only"),
    ],
)
async def test_what_verify_full_or_the_server_refuses_fails_clearly(
    tmp_path: Path, server: PrivateServer, ca: trustme.CA, fields: dict[str, str], why: str
) -> None:
    target = resolve_storage(config_file=config(tmp_path, server, ca, **fields), environ={})
    database = Database(target.url, **target.database_options())
    try:
        with pytest.raises(StorageError):
            await database.ping()
    finally:
        await database.close()


async def test_another_ca_is_refused(tmp_path: Path, server: PrivateServer) -> None:
    target = resolve_storage(config_file=config(tmp_path, server, trustme.CA()), environ={})
    database = Database(target.url, **target.database_options())
    try:
        with pytest.raises(StorageError, match=r"(?i)certificate"):
            await database.ping()
    finally:
        await database.close()
