"""Storage: one port (``port.py``) over SQLite, PostgreSQL and MySQL/MariaDB.

The rest of the product imports this package only: the port's Protocols, the values they
take and return, its errors, and :class:`Database`, the one implementation. What is inside
(writer, reader, compiler, change log, the per-database backends in ``dialects/``) may change
without any caller noticing; ``tests/unit/test_layering.py`` holds everyone to it.
"""

from clusterpedia.storage.catalog import PrinterColumn, SyncedType
from clusterpedia.storage.changelog import ChangeEvent, Marks
from clusterpedia.storage.config import (
    StorageTarget,
    describe,
    resolve_storage,
    resolve_storage_url,
)
from clusterpedia.storage.database import Database
from clusterpedia.storage.engine import StorageURLError, dialect_of
from clusterpedia.storage.errors import (
    ContinueExpired,
    InvalidQuery,
    ResourceVersionTooLarge,
    StorageError,
    StorageFailed,
    StorageUnavailable,
    add_transient_codes,
)
from clusterpedia.storage.migrate import SchemaTooNew
from clusterpedia.storage.port import Catalog, Changes, ObjectReads, ObjectWrites, Storage
from clusterpedia.storage.query import (
    ORDERABLE_COLUMNS,
    Item,
    OrderBy,
    OwnerFilter,
    Page,
    Query,
    TypeFilter,
    WhereSQL,
)
from clusterpedia.storage.reader import CATCH_UP_SECONDS, wait_for_head
from clusterpedia.storage.records import (
    CLUSTER_ANNOTATION,
    Change,
    Delete,
    Upsert,
    parse_timestamp,
    upsert_from_object,
)
from clusterpedia.storage.replica import ReplicaLag, measure_lag
from clusterpedia.storage.selection import (
    FieldPath,
    FieldRequirement,
    Index,
    Key,
    Requirement,
    Segment,
)

__all__ = [
    "CATCH_UP_SECONDS",
    "CLUSTER_ANNOTATION",
    "ORDERABLE_COLUMNS",
    "Catalog",
    "Change",
    "ChangeEvent",
    "Changes",
    "ContinueExpired",
    "Database",
    "Delete",
    "FieldPath",
    "FieldRequirement",
    "Index",
    "InvalidQuery",
    "Item",
    "Key",
    "Marks",
    "ObjectReads",
    "ObjectWrites",
    "OrderBy",
    "OwnerFilter",
    "Page",
    "PrinterColumn",
    "Query",
    "ReplicaLag",
    "Requirement",
    "ResourceVersionTooLarge",
    "SchemaTooNew",
    "Segment",
    "Storage",
    "StorageError",
    "StorageFailed",
    "StorageTarget",
    "StorageURLError",
    "StorageUnavailable",
    "SyncedType",
    "TypeFilter",
    "Upsert",
    "WhereSQL",
    "add_transient_codes",
    "describe",
    "dialect_of",
    "measure_lag",
    "parse_timestamp",
    "resolve_storage",
    "resolve_storage_url",
    "upsert_from_object",
    "wait_for_head",
]
