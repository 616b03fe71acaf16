"""What the storage configuration resolves to: a URL and what a URL cannot say."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.engine import make_url

from clusterpedia.storage.sql_log import SQLLog


@dataclass(frozen=True)
class StorageTarget:
    """The database to open: its URL and what the URL cannot say."""

    url: str
    engine_options: Mapping[str, Any] = field(default_factory=dict)  # pool, connect_args
    sql_log: SQLLog | None = None
    transient_codes: tuple[str | int, ...] = ()  # more errors a retry cures
    notices: tuple[str, ...] = ()  # fields accepted with no effect here: said at start
    tls: str = ""  # the sslMode that connect_args carry (PostgreSQL's is in the URL)
    read: StorageTarget | None = None  # a read replica: list/get/watch go there

    def with_read_replica(self, url: str) -> StorageTarget:
        """This target with reads sent to ``url``, a replica reached as the primary is (the
        same pool, TLS and SQL log settings)."""
        return replace(self, read=replace(self, url=url, read=None, notices=()))

    def database_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~clusterpedia.storage.Database` beside the URL."""
        return {**self.engine_options, "sql_log": self.sql_log}

    def describe(self) -> str:
        """The URL with its password hidden, and a TLS mode the URL does not show."""
        text = describe(self.url) + (f" (sslMode {self.tls})" if self.tls else "")
        if self.read is not None:
            text += f", reads from {self.read.describe()}"
        return text


def describe(url: str) -> str:
    """The URL with its password hidden, for logs."""
    return make_url(url).render_as_string(hide_password=True)
