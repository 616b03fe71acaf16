"""Reach-through pieces that need no member: which paths reach through and as what, which are
long-running (no request deadline, counted as watches), the policy's syntax, the headers a
member is sent (the user's identity, never the client's own credentials), and a directory
that keeps an open session's HTTP client alive when its PediaCluster changes."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from clusterpedia.apiserver.authn import USER, User
from clusterpedia.apiserver.chain import with_recovery, with_request_info
from clusterpedia.apiserver.members import (
    Identity,
    IdentityMapping,
    MemberDirectory,
    forwarded_headers,
)
from clusterpedia.apiserver.reach import (
    MemberRequest,
    ReachPolicy,
    ReachServer,
    parse_allowed_subresources,
)
from clusterpedia.apiserver.requestinfo import resolve_request, subresource_of
from clusterpedia.apiserver.status import StatusError
from clusterpedia.kube.access import MemberAccess
from clusterpedia.storage import SyncedType

P = "/apis/clusterpedia.io/v1beta1/resources/clusters"


@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        ("api/v1/namespaces/ns/pods/web-0/log", ("pods", "log")),
        ("api/v1/namespaces/ns/pods/web-0/exec", ("pods", "exec")),
        ("api/v1/namespaces/ns/pods/web-0/portforward", ("pods", "portforward")),
        ("api/v1/namespaces/ns/pods/web-0/proxy/metrics/x", ("pods", "proxy")),
        ("api/v1/namespaces/ns/services/web/proxy", ("services", "proxy")),
        ("api/v1/nodes/node-0/proxy/healthz", ("nodes", "proxy")),
        ("api/v1/namespaces/ns/pods/web-0", None),  # a get: served from the database
        ("api/v1/namespaces/ns/pods/web-0/status", None),
        ("api/v1/namespaces/ns/pods/web-0/log/more", None),
        ("api/v1/namespaces/ns/services/web/exec", None),
        ("apis/apps/v1/namespaces/ns/pods/web-0/exec", None),
    ],
)
def test_which_member_paths_are_subresources_that_reach_through(
    inner: str, expected: tuple[str, str] | None
) -> None:
    assert subresource_of(inner.split("/")) == expected


def test_long_running_are_watches_sessions_and_followed_logs() -> None:
    def request(path: str) -> bool:
        return resolve_request(make_mocked_request("GET", path)).long_running

    assert request("/apis/clusterpedia.io/v1beta1/resources/api/v1/pods?watch=true")
    assert request("/api/v1/pods?watch=1")

    assert request(f"{P}/c1/api/v1/namespaces/ns/pods/p/exec?command=sh")
    assert request(f"{P}/c1/api/v1/namespaces/ns/pods/p/log?follow=true")
    assert request(f"{P}/c1/proxy/api/v1/namespaces/ns/pods/p/log?follow=true")
    assert not request(f"{P}/c1/api/v1/namespaces/ns/pods/p/log")
    assert not request(f"{P}/c1/api/v1/namespaces/ns/pods/p")
    assert not request(f"{P}/c1")


def test_the_originals_subresource_syntax() -> None:
    assert parse_allowed_subresources("pods/exec, log") == {("pods", "exec"), ("pods", "log")}
    assert parse_allowed_subresources("proxy") == {
        ("pods", "proxy"),
        ("nodes", "proxy"),
        ("services", "proxy"),
    }
    assert parse_allowed_subresources("") == frozenset()
    assert ("pods", "exec") in ReachPolicy().subresources
    assert ("pods", "proxy") not in ReachPolicy().subresources
    for bad in ("pods/status", "nodes/exec", "a/b/exec", "portfowrd"):
        with pytest.raises(ValueError, match="not a supported subresource"):
            parse_allowed_subresources(bad)


def test_the_member_acts_as_the_requesting_user() -> None:
    user = User(
        name="alice",
        uid="42",
        groups=("dev", "system:authenticated"),
        extra={"scopes.example.com/x": ("a", "b")},
    )
    headers = IdentityMapping().headers(user)
    assert headers["Impersonate-User"] == "alice"
    assert "Impersonate-Uid" not in headers  # a host uid means nothing to a member
    assert headers.getall("Impersonate-Group") == ["dev", "system:authenticated"]
    assert headers.getall("Impersonate-Extra-scopes.example.com%2Fx") == ["a", "b"]


def test_host_identities_do_not_become_member_identities() -> None:
    """No system: group but system:authenticated, no token extras, and no system: user (a
    host ServiceAccount would act as the member's ServiceAccount of the same name)."""
    admin = User(
        name="alice",
        groups=("system:masters", "system:nodes", "system:authenticated", "ops"),
        extra={"authentication.kubernetes.io/node-name": ("n1",), "Scope": ("x",)},
    )
    headers = IdentityMapping().headers(admin)
    assert headers.getall("Impersonate-Group") == ["system:authenticated", "ops"]
    assert [k for k in headers if k.startswith("Impersonate-Extra-")] == ["Impersonate-Extra-Scope"]
    for name in ("system:serviceaccount:ns:name", "system:node:n1", "system:admin"):
        with pytest.raises(StatusError, match="--impersonate-user-prefix") as refused:
            IdentityMapping().headers(User(name=name, groups=("system:serviceaccounts",)))
        assert refused.value.code == 403


def test_prefixes_name_every_user_and_group_explicitly() -> None:
    mapping = IdentityMapping(user_prefix="clusterpedia:", group_prefix="cp:")
    sa = User(
        name="system:serviceaccount:ns:name",
        groups=("system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated"),
    )
    headers = mapping.headers(sa)
    assert headers["Impersonate-User"] == "clusterpedia:system:serviceaccount:ns:name"
    assert headers.getall("Impersonate-Group") == ["system:authenticated"]
    person = mapping.headers(User(name="alice", groups=("dev", "system:masters")))
    assert person["Impersonate-User"] == "clusterpedia:alice"
    assert person.getall("Impersonate-Group") == ["cp:dev"]


def test_a_client_never_chooses_its_identity_on_the_member() -> None:
    request = make_mocked_request(
        "GET",
        f"{P}/c1/api/v1/namespaces/ns/pods/p/log",
        headers={
            "Authorization": "Bearer client",
            "Impersonate-User": "system:admin",
            "Impersonate-Group": "system:masters",
            "X-Remote-User": "mallory",
            "Accept": "application/json",
        },
    )
    assert dict(forwarded_headers(request)) == {"Accept": "application/json"}
    access = MemberAccess("https://m", ssl_context=None, headers={"Authorization": "Bearer pc"})  # type: ignore[arg-type]
    as_user = Identity().headers(User(name="alice"), access)
    assert as_user["Impersonate-User"] == "alice" and as_user["Authorization"] == "Bearer pc"
    as_pediacluster = Identity(as_pediacluster=True).headers(User(name="alice"), access)
    assert dict(as_pediacluster) == {"Authorization": "Bearer pc"}
    with pytest.raises(StatusError, match="never with credentials a client sends"):
        forwarded_headers(
            make_mocked_request("GET", "/", headers={"X-Clusterpedia-Proxy-Token": "t"})
        )


class FakeCatalog:
    def __init__(self, *types: SyncedType):
        self.types = list(types)

    async def all(self, *, fresh: bool = False) -> list[SyncedType]:
        return self.types


class Recording(ReachServer):
    """The layer, with the member replaced by a record of what would be sent."""

    def __init__(self, policy: ReachPolicy, *types: SyncedType):
        super().__init__(None, catalog=FakeCatalog(*types), policy=policy)  # type: ignore[arg-type]
        self.sent: list[MemberRequest] = []

    async def _reach(self, request: web.Request, target: MemberRequest) -> web.StreamResponse:
        self.sent.append(target)
        return web.Response(text="member")


PODS = SyncedType(
    cluster="c1", group="", version="v1", resource="pods", kind="Pod", namespaced=True
)


async def answer(server: Recording, method: str, path: str, **headers: str) -> web.Response:
    """The answer of the layer, errors as the chain's recovery turns them into Status."""

    async def delegate(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ours")

    async def layer(request: web.Request) -> web.StreamResponse:
        return await server(request, delegate)

    request = make_mocked_request(method, path, headers=CIMultiDict(headers))
    request[USER] = User(name="alice")
    response = await with_request_info(request, partial(with_recovery, delegate=layer))
    assert isinstance(response, web.Response)
    return response


async def reach(server: Recording, method: str, path: str, **headers: str) -> str:
    response = await answer(server, method, path, **headers)
    assert response.status == 200, response.text
    return str(response.text)


@pytest.mark.asyncio
async def test_what_reaches_the_member_and_what_the_database_answers() -> None:
    default = Recording(ReachPolicy(), PODS)
    assert await reach(default, "GET", f"{P}/c1/api/v1/pods?limit=5") == "ours"
    assert await reach(default, "GET", f"{P}/c1/api/v1/configmaps") == "ours"  # not allowed
    assert await reach(default, "GET", f"{P}/c1/api") == "ours"
    assert await reach(default, "GET", f"{P}/c1/api/v1/pods?forward=true&limit=5") == "member"
    assert default.sent[-1] == MemberRequest("c1", "/api/v1/pods", "forward", "limit=5")
    labelled = f"{P}/c1/api/v1/pods?labelSelector=app%3Dweb%2Csearch.clusterpedia.io%2Fforward"
    assert await reach(default, "GET", labelled) == "member"
    assert default.sent[-1].query == "labelSelector=app%3Dweb"
    await reach(default, "GET", f"{P}/c1/api/v1/pods", **{"X-Clusterpedia-Forward": "true"})
    assert default.sent[-1].kind == "forward"
    log = f"{P}/c1/api/v1/namespaces/ns/pods/p/log?follow=true"
    assert await reach(default, "GET", log) == "member"
    assert default.sent[-1] == MemberRequest(
        "c1", "/api/v1/namespaces/ns/pods/p/log", "log", "follow=true"
    )

    refusals = [
        ("GET", f"{P}/c1/api/v1/namespaces/ns/pods/p/exec", {}, 400, "WebSocket"),
        ("GET", f"{P}/c1/api/v1/namespaces/ns/pods/p/proxy", {}, 403, "pods/proxy"),
        ("GET", f"{P}/c1/proxy/version", {}, 404, "--enable-proxy-path"),
        ("GET", f"{P}/c1/api/v1/configmaps?forward=true", {}, 403, "--allow-forward-unsync"),
        ("GET", "/apis/clusterpedia.io/v1beta1/resources/api/v1/pods?forward=1", {}, 400, ""),
        ("GET", f"{P}/c1/api/v1/pods?forward=true&orderby=name", {}, 400, "search parameter"),
        ("POST", f"{P}/c1/api/v1/namespaces/ns/pods/p/log", {}, 405, "GET"),
    ]
    for method, path, headers, status, message in refusals:
        refused = await answer(default, method, path, **headers)
        assert refused.status == status, path
        assert message in str(refused.text), refused.text

    wide = Recording(
        ReachPolicy(
            subresources=parse_allowed_subresources("log,proxy"),
            forward_unsynced=True,
            proxy_path=True,
        ),
        PODS,
    )
    assert await reach(wide, "GET", f"{P}/c1/api/v1/pods") == "ours"
    assert await reach(wide, "GET", f"{P}/c1/api/v1/configmaps?limit=1") == "member"
    assert wide.sent[-1].kind == "unsynced" and not wide.sent[-1].discovery
    assert await reach(wide, "GET", f"{P}/c1/apis") == "member"
    assert wide.sent[-1].discovery
    assert await reach(wide, "POST", f"{P}/c1/proxy/api/v1/namespaces/ns/configmaps") == "member"
    assert wide.sent[-1] == MemberRequest(
        "c1", "/api/v1/namespaces/ns/configmaps", "proxy-path", ""
    )
    svc = f"{P}/c1/api/v1/namespaces/ns/services/web:80/proxy/a/"
    assert await reach(wide, "PUT", svc) == "member"
    assert wide.sent[-1].path == "/api/v1/namespaces/ns/services/web%3A80/proxy/a/"
    exec_refused = await answer(wide, "GET", f"{P}/c1/api/v1/namespaces/ns/pods/p/exec")
    assert exec_refused.status == 403 and "pods/exec" in str(exec_refused.text)
    write = await answer(wide, "DELETE", f"{P}/c1/api/v1/namespaces/ns/configmaps/x")
    assert write.status == 405 and "is a read" in str(write.text)


class FakeHost:
    def __init__(self) -> None:
        self.token = "one"

    async def get(self, path: str) -> dict[str, Any]:
        return {"spec": {"apiserver": "https://127.0.0.1:1", "tokenData": self.token}}


@pytest.mark.asyncio
async def test_a_changed_pediacluster_leaves_open_sessions_their_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64

    from clusterpedia.apiserver import members

    host = FakeHost()
    host.token = base64.b64encode(b"one").decode()
    directory = MemberDirectory(host, "ns")  # type: ignore[arg-type]
    clock = [1000.0]
    monkeypatch.setattr(members.time, "monotonic", lambda: clock[0])
    try:
        async with directory.use("c1") as session:
            clock[0] += members.ACCESS_SECONDS + 1
            async with directory.use("c1") as same:
                assert same is session  # re-read, unchanged: the same client
            host.token = base64.b64encode(b"two").decode()
            clock[0] += members.ACCESS_SECONDS + 1
            async with directory.use("c1") as rotated:
                assert rotated is not session
                assert rotated.access.headers["Authorization"] == "Bearer two"
            assert not session.http.closed  # still used by the open session
        assert session.http.closed  # closed after its last request
    finally:
        await directory.close()
