"""Authorization by SubjectAccessReview against the host cluster, as kube-apiserver's webhook
authorizer delegates it.

Attributes are those kube-apiserver derives from the whole path (``resources`` in group
``clusterpedia.io``, verb ``get``, the inner path as name and subresource), so the RBAC that
lets a user through the aggregator is the RBAC that lets them through here, as in the original.
Health paths are always allowed; ``system:masters`` skips the review; decisions are cached
for 10 s.

Opt-in, beyond the original (``check_clusters``): a user sees only the clusters whose
PediaCluster they may ``get``, so teams sharing one Clusterpedia do not see each other's
clusters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.storage import Catalog

from .authn import USER, User
from .chain import Handler
from .requestinfo import RequestInfo, record_of
from .scope import ALLOWED_CLUSTERS
from .status import StatusError

logger = logging.getLogger(__name__)
MASTERS = "system:masters"
PEDIACLUSTER_GROUP = "cluster.clusterpedia.io"


class Authorizer:
    """Asks the host whether a user may do something; remembers the answer briefly."""

    def __init__(self, *, host: KubeClient, ttl: float = 10):
        self.host = host
        self.ttl = ttl
        self._cache: dict[tuple[Any, ...], tuple[float, bool, str]] = {}

    async def review(self, user: User, attributes: dict[str, Any]) -> tuple[bool, str]:
        if MASTERS in user.groups:
            return True, ""
        key = (user.key(), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        spec: dict[str, Any] = {
            "user": user.name,
            "groups": list(user.groups),
            "extra": {k: list(v) for k, v in user.extra.items()},
            **attributes,
        }
        if user.uid:
            spec["uid"] = user.uid
        review = await self.host.post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec},
        )
        status = review.get("status") or {}
        allowed, reason = bool(status.get("allowed")), str(status.get("reason") or "")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self.ttl, allowed, reason)
        return allowed, reason


def attributes_of(info: RequestInfo) -> dict[str, Any]:
    if not info.is_resource_request:
        return {"nonResourceAttributes": {"path": info.path, "verb": info.verb}}
    return {
        "resourceAttributes": {
            "namespace": info.namespace,
            "verb": info.verb,
            "group": info.api_group,
            "version": info.api_version,
            "resource": info.resource,
            "subresource": info.subresource,
            "name": info.name,
        }
    }


def _pediacluster(name: str) -> dict[str, Any]:
    return {
        "resourceAttributes": {
            "verb": "get",
            "group": PEDIACLUSTER_GROUP,
            "resource": "pediaclusters",
            "name": name,
        }
    }


def _forbidden(user: User, info: RequestInfo, reason: str) -> StatusError:
    if info.is_resource_request:
        what = f"{info.resource}.{info.api_group}" if info.api_group else info.resource
        message = (
            f'{what} "{info.name}" is forbidden: User "{user.name}" cannot {info.verb} '
            f'resource "{info.resource}" in API group "{info.api_group}"'
        )
        details = {"name": info.name, "group": info.api_group, "kind": info.resource}
    else:
        message = f'forbidden: User "{user.name}" cannot {info.verb} path "{info.path}"'
        details = None
    if reason:
        message += f": {reason}"
    return StatusError(403, message, details=details)


def authorization(authorizer: Authorizer, *, catalog: Catalog, check_clusters: bool) -> Any:
    """The filter: 401 without a user, 403 when the host's RBAC says no."""

    async def authorize(request: web.Request, delegate: Handler) -> web.StreamResponse:
        record = record_of(request)
        if record.health:
            return await delegate(request)
        info = record.info
        user = request.get(USER)
        if user is None:
            raise StatusError(401, "Unauthorized")
        try:
            allowed, reason = await authorizer.review(user, attributes_of(info))
            if not allowed:
                raise _forbidden(user, info, reason)
            if check_clusters and MASTERS not in user.groups:
                await _narrow_to_permitted_clusters(request, authorizer, user, catalog)
        except KubeError as error:
            logger.warning("authorization is unavailable: %s", error)
            raise StatusError(503, "authorization is unavailable; try again") from None
        return await delegate(request)

    return authorize


async def _narrow_to_permitted_clusters(
    request: web.Request, authorizer: Authorizer, user: User, catalog: Catalog
) -> None:
    record = record_of(request)
    parts = record.parts
    if parts[:3] != ("apis", "clusterpedia.io", "v1beta1") or len(parts) < 4:
        return
    if record.cluster is not None:
        cluster = record.cluster
        allowed, _ = await authorizer.review(user, _pediacluster(cluster))
        if not allowed:
            raise StatusError(
                403,
                f'pediaclusters.{PEDIACLUSTER_GROUP} "{cluster}" is forbidden: User '
                f'"{user.name}" cannot get the cluster\'s PediaCluster',
                details={"name": cluster, "group": PEDIACLUSTER_GROUP, "kind": "pediaclusters"},
            )
        return
    clusters = await catalog.clusters()
    reviews = await asyncio.gather(
        *(authorizer.review(user, _pediacluster(cluster)) for cluster in clusters)
    )
    request[ALLOWED_CLUSTERS] = frozenset(
        cluster for cluster, (allowed, _) in zip(clusters, reviews, strict=True) if allowed
    )
