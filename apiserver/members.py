"""Who we are on a member when a request reaches through to it, and how we get there.

:class:`MemberDirectory` builds each member's access from its PediaCluster as the operator
builds it (``kube/pediaclusters.py``), one HTTP session per member. :class:`Identity` says whose
rights a request uses there: by default **the requesting user's**, named on the member as
:class:`IdentityMapping` says (``Impersonate-User``, ``-Group``, ``-Extra-*``), so the member's
own RBAC decides and the PediaCluster's identity needs only ``impersonate``
(``manifests/member/impersonate.yaml``); or, only when the operator of Clusterpedia asks for
it, the PediaCluster's own rights, as the original does.

Only the request headers a member needs pass on (``forwarded_headers``): never the client's
own ``Authorization`` or ``Impersonate-*``, which would let a client choose its identity there.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from clusterpedia.kube.access import InvalidClusterConfig, MemberAccess, access_from_spec
from clusterpedia.kube.client import KubeClient, KubeError
from clusterpedia.kube.pediaclusters import authentication_secrets, host_path, object_name

from .authn import User
from .status import StatusError

logger = logging.getLogger(__name__)
PEDIACLUSTERS = ("apis", "cluster.clusterpedia.io", "v1alpha2", "pediaclusters")
ACCESS_SECONDS = 30.0  # a PediaCluster's access is re-read this often (rotated credentials)
CONNECT_SECONDS = 10.0  # to open a connection to a member, TLS handshake included
RESPONSE_SECONDS = 30.0  # default for a member's answer to begin (--member-response-timeout)
# What a client's request carries on to the member: what it asks for and in which form.
FORWARDED_REQUEST_HEADERS = (
    "Accept",
    "Accept-Encoding",
    "Content-Type",
    "Content-Encoding",
    "User-Agent",
    "If-None-Match",
    "If-Match",
    "X-Stream-Protocol-Version",
)
# The original's per-request member credentials: refused, we act as the requesting user.
CREDENTIAL_HEADERS = (
    "X-Clusterpedia-Proxy-Token",
    "X-Clusterpedia-Proxy-Ca",
    "X-Clusterpedia-Proxy-Client-Cert",
    "X-Clusterpedia-Proxy-Client-Key",
)


# The only ``system:`` group a member is told of: every authenticated user is in it there too.
AUTHENTICATED = "system:authenticated"
# Extras Kubernetes itself sets for ServiceAccount tokens (the pod, node and credential a token
# is bound to): facts of the host, which a member's node authorizer must never act on.
HOST_ONLY_EXTRA_PREFIX = "authentication.kubernetes.io/"


@dataclass(frozen=True)
class IdentityMapping:
    """How a host user is named on a member when a request acts there as that user.

    A host identity is not a member identity: the host's ServiceAccount ``ns/name`` is not the
    member's ServiceAccount of that name, and the host's ``system:masters`` must not be the
    member's. So, whatever the prefixes:

    - ``system:`` groups are never passed on (``system:authenticated`` alone is, as the member
      adds it anyway); neither is the uid (a host uid means nothing to a member) nor the
      extras Kubernetes sets for tokens (``authentication.kubernetes.io/...``).
    - The user name and the other groups get ``user_prefix`` and ``group_prefix``
      (``--impersonate-user-prefix``, ``--impersonate-group-prefix``), so a member's RBAC grants
      reach-through explicitly (to ``clusterpedia:alice``, not to whoever is ``alice``).
    - Without a user prefix, a ``system:`` user name (host ServiceAccounts, nodes, the
      control plane's own users) is refused with 403: passed as it is, it would act as the
      member's namesake.
    """

    user_prefix: str = ""
    group_prefix: str = ""

    def user_name(self, user: User) -> str:
        if not self.user_prefix and user.name.startswith("system:"):
            raise StatusError(
                403,
                f'user "{user.name}" cannot act on a member as itself: host ServiceAccounts and '
                "other system: users would act as the member's own namesakes; members see users "
                "under --impersonate-user-prefix once it is set",
                reason="Forbidden",
            )
        return self.user_prefix + user.name

    def groups(self, user: User) -> list[str]:
        return [
            group if group == AUTHENTICATED else self.group_prefix + group
            for group in user.groups
            if group == AUTHENTICATED or not group.startswith("system:")
        ]

    def headers(self, user: User) -> CIMultiDict[str]:
        """The headers that make the member act as ``user``'s mapped identity (one header
        per group and extra value)."""
        headers: CIMultiDict[str] = CIMultiDict({"Impersonate-User": self.user_name(user)})
        for group in self.groups(user):
            headers.add("Impersonate-Group", group)
        for key, values in user.extra.items():
            if key.lower().startswith(HOST_ONLY_EXTRA_PREFIX):
                continue
            for value in values:
                headers.add(f"Impersonate-Extra-{quote(key, safe='')}", value)
        return headers


def impersonation_role(
    mapping: IdentityMapping, *, users: list[str], groups: list[str]
) -> dict[str, object]:
    """The member ClusterRole that lets the PediaCluster's identity impersonate exactly what
    ``mapping`` makes of these host ``users`` and ``groups`` (RBAC has no prefix match, so
    each name is listed, as Karmada lists its members' names)."""
    named_users = sorted({mapping.user_name(User(name=user)) for user in users})
    named_groups = sorted({AUTHENTICATED, *mapping.groups(User(name="", groups=tuple(groups)))})
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "clusterpedia-member-impersonator"},
        "rules": [
            {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"],
             "resourceNames": named_users},
            {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"],
             "resourceNames": named_groups},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["userextras/*"],
             "verbs": ["impersonate"]},
        ],
    }  # fmt: skip


class Identity:
    """Whose rights a request reaching a member uses there."""

    def __init__(self, *, as_pediacluster: bool = False, mapping: IdentityMapping | None = None):
        self.as_pediacluster = as_pediacluster
        self.mapping = mapping or IdentityMapping()

    def headers(self, user: User, access: MemberAccess) -> CIMultiDict[str]:
        headers = CIMultiDict[str]() if self.as_pediacluster else self.mapping.headers(user)
        headers.update(access.headers)
        return headers

    def warn(self) -> None:
        if self.as_pediacluster:
            logger.warning(
                "--allow-pediacluster-config-for-proxy-request: requests reaching members act "
                "there with each PediaCluster's own credentials, not as the requesting user; "
                "anyone who may read through Clusterpedia may use those rights (exec into every "
                "pod the PediaCluster's identity may exec into)"
            )


def forwarded_headers(request: web.Request) -> CIMultiDict[str]:
    """The client's headers a member is sent; the member's credentials are added to them."""
    for name in CREDENTIAL_HEADERS:
        if name in request.headers:
            raise StatusError(
                400,
                f"{name} is not accepted: requests reach members as the requesting user "
                "(impersonation), never with credentials a client sends",
            )
    return CIMultiDict(
        (name, value)
        for name in FORWARDED_REQUEST_HEADERS
        for value in request.headers.getall(name, ())
    )


@dataclass(eq=False)
class Member:
    """One member's access and HTTP session; closed once replaced and no request uses it."""

    access: MemberAccess
    http: aiohttp.ClientSession
    fingerprint: bytes
    read_at: float
    users: int = 0
    retired: bool = False

    async def release(self) -> None:
        self.users -= 1
        if self.retired and self.users == 0:
            await self.http.close()


class MemberDirectory:
    """Each member's access, built from its PediaCluster as the operator builds it and
    re-read after ``ACCESS_SECONDS`` (rotated credentials); one HTTP session per member. A
    session that a changed PediaCluster replaces stays open for the requests using it (an exec
    session may last hours) and closes after the last."""

    def __init__(
        self, host: KubeClient, namespace: str, *, response_timeout: float = RESPONSE_SECONDS
    ):
        self.host = host
        self.namespace = namespace
        self.response_timeout = response_timeout  # for a member's answer to begin
        self._known: dict[str, Member] = {}

    @contextlib.asynccontextmanager
    async def use(self, cluster: str) -> AsyncIterator[Member]:
        member = await self._current(cluster)
        member.users += 1
        try:
            yield member
        finally:
            await member.release()

    async def _current(self, cluster: str) -> Member:
        try:
            object_name(cluster, what="cluster")
        except InvalidClusterConfig:  # "." or "..": never a PediaCluster, nor another path
            raise StatusError(404, f'cluster "{cluster}" is not a PediaCluster') from None
        known = self._known.get(cluster)
        if known is not None and time.monotonic() - known.read_at < ACCESS_SECONDS:
            return known
        try:
            found = await self.host.get(host_path(*PEDIACLUSTERS, cluster))
        except KubeError as error:
            if error.status == 404:
                raise StatusError(404, f'cluster "{cluster}" is not a PediaCluster') from None
            raise StatusError(503, f"cannot read PediaCluster {cluster}: {error}") from None
        spec = found.get("spec") or {}
        try:
            secrets = await authentication_secrets(self.host, self.namespace, spec)
            fingerprint = orjson.dumps(
                [spec, {purpose: value.hex() for purpose, value in secrets.items()}],
                option=orjson.OPT_SORT_KEYS,
            )
            if known is not None and known.fingerprint == fingerprint:
                known.read_at = time.monotonic()
                return known
            access = access_from_spec(spec, secrets=secrets)
        except InvalidClusterConfig as error:
            raise StatusError(503, f"PediaCluster {cluster} cannot be reached: {error}") from None
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=access.ssl_context, limit=0),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=CONNECT_SECONDS, sock_connect=CONNECT_SECONDS
            ),
            auto_decompress=False,  # bytes pass through as the member encoded them
        )
        if known is not None:
            known.retired = True
            known.users += 1
            await known.release()  # closes it now if nothing uses it
        member = Member(access, http, fingerprint, time.monotonic())
        self._known[cluster] = member
        return member

    async def close(self) -> None:
        for member in self._known.values():
            await member.http.close()
        self._known.clear()
