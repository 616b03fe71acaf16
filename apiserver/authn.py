"""Authentication as an aggregated API server must do it (k8s.io/apiserver's delegating
authenticator: front-proxy request headers, then TokenReview).

Two authenticators, in kube-apiserver's delegating order:

1. **Request headers** from the front proxy: ``X-Remote-*`` identity is trusted only on a TLS
   connection whose client certificate was verified against the front-proxy CA (the serving
   context trusts no other CA, so "verified" means "signed by it"), carries the clientAuth
   extended key usage and a CN in ``requestheader-allowed-names`` (empty = any). On any other
   connection those headers are ignored.
2. **Bearer tokens**, checked with a TokenReview against the host cluster (cached 10 s).

Settings come from ``kube-system/extension-apiserver-authentication``, re-read periodically.
Every authenticated user gets ``system:authenticated``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clusterpedia.kube.client import KubeClient, KubeError

from .chain import Handler
from .status import StatusError

logger = logging.getLogger(__name__)
AUTHENTICATION_CONFIGMAP = (
    "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
)
AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def key(self) -> tuple[Any, ...]:
        return (self.name, self.uid, self.groups, tuple(sorted(self.extra.items())))


USER = web.RequestKey("user", User)


@dataclass(frozen=True)
class RequestHeaderConfig:
    """The front proxy's trust settings (empty ``client_ca`` = no front proxy)."""

    client_ca: str = ""
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)
    uid_headers: tuple[str, ...] = ()


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _strings(data: Mapping[str, str], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = data.get(key)
    if not raw:
        return default
    try:
        values = orjson.loads(raw)
    except orjson.JSONDecodeError:
        logger.warning("%s in extension-apiserver-authentication is not a JSON list", key)
        return default
    return tuple(str(v) for v in values) if isinstance(values, list) else default


def config_from_configmap(data: Mapping[str, str]) -> RequestHeaderConfig:
    return RequestHeaderConfig(
        client_ca=data.get("requestheader-client-ca-file", ""),
        allowed_names=_strings(data, "requestheader-allowed-names", ()),
        username_headers=_strings(data, "requestheader-username-headers", ("X-Remote-User",)),
        group_headers=_strings(data, "requestheader-group-headers", ("X-Remote-Group",)),
        extra_prefixes=_strings(data, "requestheader-extra-headers-prefix", ("X-Remote-Extra-",)),
        uid_headers=_strings(data, "requestheader-uid-headers", ()),
    )


async def load_config(host: KubeClient) -> RequestHeaderConfig:
    """Read the host's authentication ConfigMap; an absent one means no front proxy."""
    try:
        configmap = await host.get(AUTHENTICATION_CONFIGMAP)
    except KubeError as error:
        if error.status == 404:
            return RequestHeaderConfig()
        raise
    return config_from_configmap(configmap.get("data") or {})


def _front_proxy_cn(der: bytes) -> str | None:
    """The CN of a verified client certificate if it may act as a front proxy (clientAuth)."""
    certificate = x509.load_der_x509_certificate(der)
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        return None
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


class Authenticator:
    """Finds the user of a request, or None."""

    def __init__(
        self, *, host: KubeClient | None, config: RequestHeaderConfig, token_ttl: float = 10
    ):
        self.host = host
        self.config = config
        self.token_ttl = token_ttl
        self._tokens: dict[str, tuple[float, User | None]] = {}
        self._proxies: dict[bytes, str | None] = {}

    def update(self, config: RequestHeaderConfig) -> None:
        if config != self.config:
            logger.info("front-proxy authentication settings changed; reloaded")
            self.config = config
            self._proxies.clear()

    async def authenticate(self, request: web.Request) -> User | None:
        user = self._from_front_proxy(request)
        if user is not None:
            return user
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return await self._from_token(token.strip())
        return None

    def _from_front_proxy(self, request: web.Request) -> User | None:
        config = self.config
        if not config.client_ca or request.transport is None:
            return None
        ssl_object = request.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return None
        if der not in self._proxies:
            if len(self._proxies) > 64:
                self._proxies.clear()
            self._proxies[der] = _front_proxy_cn(der)
        cn = self._proxies[der]
        if cn is None or (config.allowed_names and cn not in config.allowed_names):
            return None
        headers = request.headers
        name = next((v for h in config.username_headers for v in headers.getall(h, ()) if v), "")
        if not name:
            return None
        groups = [v for h in config.group_headers for v in headers.getall(h, ())]
        extra: dict[str, list[str]] = {}
        prefixes = [p.lower() for p in config.extra_prefixes]
        for header, value in headers.items():
            lowered = header.lower()
            for prefix in prefixes:
                if lowered.startswith(prefix) and len(lowered) > len(prefix):
                    extra.setdefault(unquote(lowered[len(prefix) :]), []).append(value)
        uid = next((v for h in config.uid_headers for v in headers.getall(h, ()) if v), "")
        identity = [name, uid, *groups, *extra, *(v for values in extra.values() for v in values)]
        if not all(_is_utf8(text) for text in identity):
            # aiohttp keeps undecodable bytes as surrogates; an identity must be text (it goes
            # into reviews, logs and member impersonation as UTF-8)
            raise StatusError(400, "the front proxy's identity headers are not valid UTF-8")
        return _with_authenticated(
            User(name, uid, tuple(groups), {k: tuple(v) for k, v in extra.items()})
        )

    async def _from_token(self, token: str) -> User | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._tokens.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        if self.host is None:
            return None
        review = await self.host.post(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            },
        )
        status = review.get("status") or {}
        user = None
        if status.get("authenticated"):
            info = status.get("user") or {}
            user = _with_authenticated(
                User(
                    name=info.get("username", ""),
                    uid=info.get("uid", ""),
                    groups=tuple(info.get("groups") or ()),
                    extra={k: tuple(v) for k, v in (info.get("extra") or {}).items()},
                )
            )
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[key] = (now + self.token_ttl, user)
        return user


def _with_authenticated(user: User) -> User:
    if AUTHENTICATED in user.groups or user.name == "system:anonymous":
        return user
    return User(user.name, user.uid, (*user.groups, AUTHENTICATED), user.extra)


def authentication(authenticator: Authenticator) -> Any:
    """The filter: records the user (absent = unauthenticated) for the authorization filter."""

    async def authenticate(request: web.Request, delegate: Handler) -> web.StreamResponse:
        user = await authenticator.authenticate(request)
        if user is not None:
            request[USER] = user
        return await delegate(request)

    return authenticate
