"""The database schema: one definition (SQLAlchemy Core) for SQLite, PostgreSQL and MySQL.

Column types chosen on measured evidence (``bench/storage.py`` measures them):

- ``object`` holds the member's JSON exactly as it will be served. PostgreSQL stores it as
  ``bytea``: ``jsonb`` must parse and re-encode every ~5 KB object on write and ingests 2-3x
  slower, and ``bytea`` comes back as bytes that the API server splices into responses without
  a copy. MySQL/MariaDB and SQLite store text (``LONGTEXT`` / ``TEXT``) because their JSON
  functions refuse binary strings. Field selectors parse ``object`` at query time; they always
  run beside indexed filters (resource type, cluster, namespace, labels).
- ``labels`` is a small copy of ``metadata.labels`` (``jsonb`` with a GIN index on PostgreSQL,
  JSON text elsewhere), so label selectors never parse whole objects.
- Identifier columns are ASCII (Kubernetes names are DNS labels/subdomains): on MySQL that keeps
  the unique key within InnoDB's 3072-byte limit without prefix indexes, and makes comparisons
  byte-wise (``ascii_bin``; ``COLLATE "C"`` on PostgreSQL), as Kubernetes compares names, so
  every database orders and pages identically.

``change_log`` is the ordered record of every change, written in the same transaction as the
batch that made it (``writer.py``); its ``rv`` is the project's own resourceVersion, global
across clusters. ``change_log_marks`` holds the last rv handed out (``head``) and the newest rv
pruned away (``pruned``), one row each so that pruning never waits on the writers' row.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

# 2: resource_types; 3: cluster_health; 4: change_log; 5: PostgreSQL labels repaired (the
# initial list's COPY had stored them as JSON strings)
SCHEMA_VERSION = 5

metadata = sa.MetaData()


def _ascii(length: int) -> sa.types.TypeEngine[str]:
    return (
        sa.String(length)
        .with_variant(sa.String(length, collation="C"), "postgresql")
        .with_variant(
            mysql.VARCHAR(length, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
        )
    )


ObjectBytes = (
    sa.Text()
    .with_variant(postgresql.BYTEA(), "postgresql")
    .with_variant(mysql.LONGTEXT(charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb")
)
LabelsJSON = (
    sa.Text()
    .with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
    .with_variant(mysql.TEXT(charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb")
)
Timestamp = sa.DateTime(timezone=False).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

resources = sa.Table(
    "resources",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("group", _ascii(253), nullable=False),
    sa.Column("version", _ascii(63), nullable=False),
    sa.Column("resource", _ascii(253), nullable=False),
    sa.Column("kind", _ascii(253), nullable=False),
    sa.Column("cluster", _ascii(253), nullable=False),
    sa.Column("namespace", _ascii(253), nullable=False),  # "" for cluster-scoped objects
    sa.Column("name", _ascii(253), nullable=False),
    sa.Column("uid", _ascii(64), nullable=False),
    sa.Column("owner_uid", _ascii(64), nullable=False, server_default=""),  # controller owner
    sa.Column("resource_version", _ascii(64), nullable=False),  # the member's own
    sa.Column("created_at", Timestamp, nullable=False),  # metadata.creationTimestamp, UTC
    sa.Column("synced_at", Timestamp, nullable=False),
    sa.Column("deleted_at", Timestamp, nullable=True),  # metadata.deletionTimestamp
    sa.Column("labels", LabelsJSON, nullable=True),
    sa.Column("object", ObjectBytes, nullable=False),
    sa.UniqueConstraint(
        "group", "version", "resource", "cluster", "namespace", "name", name="uq_resources_key"
    ),
    # (group, version, resource, cluster) lookups use the unique key's prefix, and
    # cluster-wide deletes the (cluster, ...) indexes below: no separate index for either.
    sa.Index(
        "ix_resources_gvr_namespace_name", "group", "version", "resource", "namespace", "name"
    ),
    sa.Index("ix_resources_gvr_name", "group", "version", "resource", "name"),
    sa.Index("ix_resources_gvr_created", "group", "version", "resource", "created_at"),
    sa.Index("ix_resources_cluster_uid", "cluster", "uid"),
    sa.Index("ix_resources_cluster_owner", "cluster", "owner_uid"),
)
# MySQL and SQLite cannot index a whole JSON document; only PostgreSQL gets this one.
sa.Index("ix_resources_labels", resources.c.labels, postgresql_using="gin").ddl_if(
    dialect="postgresql"
)


def _object_key() -> list[sa.Column[str]]:
    """(group, version, resource, cluster, namespace, name): which object a row is about."""
    return [
        sa.Column("group", _ascii(253), nullable=False),
        sa.Column("version", _ascii(63), nullable=False),
        sa.Column("resource", _ascii(253), nullable=False),
        sa.Column("cluster", _ascii(253), nullable=False),
        sa.Column("namespace", _ascii(253), nullable=False),
        sa.Column("name", _ascii(253), nullable=False),
    ]


# Label index for MySQL/MariaDB, which cannot index a JSON document: one row per label of each
# object, so an equality selector starts from (type, key, value) instead of scanning every
# object of the type (4.8 s -> 9 ms at 100k pods on MariaDB, bench/storage.py). PostgreSQL has
# the GIN index on resources.labels. SQLite, the small-install default, does not use it either:
# its planner still drove the query from the object order (364 -> 168 ms) while writes slowed
# by half; there a substring prefilter on the labels text spares the JSON parse instead.
resource_labels = sa.Table(
    "resource_labels",
    metadata,
    *_object_key(),
    sa.Column("key", _ascii(317), nullable=False),  # [DNS subdomain prefix/]name
    sa.Column("value", _ascii(63), nullable=False),
    sa.PrimaryKeyConstraint("group", "version", "resource", "cluster", "namespace", "name", "key"),
    sa.Index("ix_resource_labels_lookup", "group", "version", "resource", "key", "value"),
)
LABEL_KEY_MAX, LABEL_VALUE_MAX = 317, 63

# What each cluster syncs, with what discovery needs to describe it (kind, scope, names,
# printer columns of custom resources). Written by the syncing replica, read by every serving
# replica: discovery comes from here, never from in-process sync state.
resource_types = sa.Table(
    "resource_types",
    metadata,
    sa.Column("cluster", _ascii(253), nullable=False),
    sa.Column("group", _ascii(253), nullable=False),
    sa.Column("version", _ascii(63), nullable=False),
    sa.Column("resource", _ascii(253), nullable=False),
    sa.Column("kind", _ascii(253), nullable=False),
    sa.Column("namespaced", sa.Boolean, nullable=False),
    sa.Column("singular", _ascii(253), nullable=False, server_default=""),
    sa.Column("details", sa.Text, nullable=False),  # JSON: shortNames, categories, columns
    sa.PrimaryKeyConstraint("cluster", "group", "version", "resource"),
)

# Each cluster's health as its synchro last saw it, so every serving replica can warn that a
# cluster's data may be stale (the original's Warning header).
cluster_health = sa.Table(
    "cluster_health",
    metadata,
    sa.Column("cluster", _ascii(253), primary_key=True),
    sa.Column("healthy", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

# The change log behind watch. ``rv`` is assigned by the writer from the ``head`` mark while it
# holds that row's lock, so rvs are dense and commit in order: a reader that has seen rv N has
# seen every rv below it. ``object`` is the object as served at that rv (for DELETED: its last
# state), ``labels`` a copy of its labels so that label selectors need no parse.
change_log = sa.Table(
    "change_log",
    metadata,
    sa.Column(
        "rv",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("type", _ascii(8), nullable=False),  # ADDED, MODIFIED, DELETED
    *_object_key(),
    sa.Column(
        "labels",
        sa.Text().with_variant(
            mysql.TEXT(charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
        ),
        nullable=True,
    ),
    sa.Column("object", ObjectBytes, nullable=False),
    sa.Column("logged_at", Timestamp, nullable=False),  # for pruning by age
)

HEAD, PRUNED = "head", "pruned"
change_log_marks = sa.Table(
    "change_log_marks",
    metadata,
    sa.Column("name", _ascii(16), primary_key=True),
    sa.Column("rv", sa.BigInteger, nullable=False),
)

schema_info = sa.Table(
    "clusterpedia_schema",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)
