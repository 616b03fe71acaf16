"""Reach-through pieces that need no member: which paths reach through, which are long-running
(no request deadline, counted as watches), and the impersonation headers of a user."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from clusterpedia.apiserver.authn import User
from clusterpedia.apiserver.reach import Target, impersonation, long_running, reach_target

P = "/apis/clusterpedia.io/v1beta1/resources/clusters"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            f"{P}/c1/api/v1/namespaces/ns/pods/web-0/log",
            Target("c1", "/api/v1/namespaces/ns/pods/web-0/log", "log"),
        ),
        (
            f"{P}/c1/api/v1/namespaces/ns/pods/web-0/exec",
            Target("c1", "/api/v1/namespaces/ns/pods/web-0/exec", "exec"),
        ),
        (
            f"{P}/c1/api/v1/namespaces/ns/pods/web-0/portforward",
            Target("c1", "/api/v1/namespaces/ns/pods/web-0/portforward", "portforward"),
        ),
        (f"{P}/c1/api/v1/namespaces/ns/pods/web-0", None),  # a get: served from the database
        (f"{P}/c1/api/v1/namespaces/ns/pods/web-0/status", None),
        (f"{P}/c1/api/v1/namespaces/ns/services/web/proxy", None),
        (f"{P}/c1/apis/apps/v1/namespaces/ns/pods/web-0/exec", None),
        ("/apis/clusterpedia.io/v1beta1/resources/api/v1/namespaces/ns/pods/web-0/log", None),
    ],
)
def test_which_paths_reach_through(path: str, expected: Target | None) -> None:
    assert reach_target(path) == expected


def test_long_running_are_sessions_and_followed_logs() -> None:
    def request(path: str) -> bool:
        return long_running(make_mocked_request("GET", path))

    assert request(f"{P}/c1/api/v1/namespaces/ns/pods/p/exec?command=sh")
    assert request(f"{P}/c1/api/v1/namespaces/ns/pods/p/log?follow=true")
    assert not request(f"{P}/c1/api/v1/namespaces/ns/pods/p/log")
    assert not request(f"{P}/c1/api/v1/namespaces/ns/pods/p")


def test_the_member_acts_as_the_requesting_user() -> None:
    user = User(
        name="alice",
        uid="42",
        groups=("dev", "system:authenticated"),
        extra={"scopes.example.com/x": ("a", "b")},
    )
    headers = impersonation(user)
    assert headers["Impersonate-User"] == "alice"
    assert headers["Impersonate-Uid"] == "42"
    assert headers.getall("Impersonate-Group") == ["dev", "system:authenticated"]
    assert headers.getall("Impersonate-Extra-scopes.example.com%2Fx") == ["a", "b"]
    assert "Impersonate-Uid" not in impersonation(User(name="bob"))


@pytest.mark.asyncio
async def test_the_long_running_layout_is_served_as_the_path_it_stands_for() -> None:
    from aiohttp import web

    from clusterpedia.apiserver.chain import with_request_info
    from clusterpedia.apiserver.requestinfo import request_info

    seen: list[tuple[str, str, str]] = []

    async def delegate(request: web.Request) -> web.StreamResponse:
        info = request_info(request)
        seen.append((request.path, request.query["labelSelector"], info.resource))
        return web.Response()

    long_running_path = (
        "/apis/clusterpedia.io/v1beta1/proxy/resources/api/v1/pods"
        "?labelSelector=app%3Dweb&watch=true"
    )
    await with_request_info(make_mocked_request("GET", long_running_path), delegate)
    assert seen == [("/apis/clusterpedia.io/v1beta1/resources/api/v1/pods", "app=web", "resources")]
