"""Which clusters a request may see, shared by the servers that read the catalog.

The authorization filter records the clusters a user may see when the per-cluster check is on
(``ALLOWED_CLUSTERS``; absent = every cluster); servers narrow the catalog and the query to it.
"""

from __future__ import annotations

from aiohttp import web

from clusterpedia.storage import Catalog, SyncedType

ALLOWED_CLUSTERS = web.RequestKey("allowed_clusters", frozenset)


def allowed_clusters(request: web.Request) -> frozenset[str] | None:
    return request.get(ALLOWED_CLUSTERS)


async def visible_types(
    request: web.Request, catalog: Catalog, *, cluster: str | None = None, fresh: bool = False
) -> list[SyncedType]:
    """The synced types of ``cluster`` (or of every cluster) that this request may see."""
    allowed = allowed_clusters(request)
    return [
        t
        for t in await catalog.all(fresh=fresh)
        if (cluster is None or t.cluster == cluster) and (allowed is None or t.cluster in allowed)
    ]


def narrow_clusters(request: web.Request, asked: tuple[str, ...]) -> tuple[str, ...] | None:
    """The clusters a query may read: ``asked`` (empty = all) within what the request may see;
    None when nothing is left, so the answer is an empty list."""
    allowed = allowed_clusters(request)
    if allowed is None:
        return asked
    kept = tuple(c for c in asked if c in allowed) if asked else tuple(sorted(allowed))
    return kept or None
