"""Every spec value that reaches a member URL or header is checked before any request: odd but
valid values work, everything else is an InvalidClusterConfig (a condition), and no message
shows a credential."""

from __future__ import annotations

import base64

import pytest
import yaml

from clusterpedia.kube.access import (
    InvalidClusterConfig,
    access_from_kubeconfig,
    access_from_spec,
    redact_url,
)
from clusterpedia.kube.client import KubeClient, printable


def token_spec(server: str, token: bytes = b"t0ken") -> dict[str, str]:
    return {"apiserver": server, "tokenData": base64.b64encode(token).decode()}


def kubeconfig(server: str, user: dict[str, str]) -> bytes:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    ).encode()


@pytest.mark.parametrize(
    ("server", "requested"),
    [
        ("https://10.0.0.1:6443", "https://10.0.0.1:6443/api/v1/pods"),
        ("https://rancher.example/k8s/clusters/c-1", "https://rancher.example/k8s/clusters/c-1/api/v1/pods"),
        ("https://rancher.example/k8s/clusters/c-1/", "https://rancher.example/k8s/clusters/c-1/api/v1/pods"),
        ("https://[::1]:6443", "https://[::1]:6443/api/v1/pods"),
    ],
)  # fmt: skip
def test_a_server_path_prefixes_every_request(server: str, requested: str) -> None:
    client = KubeClient(access_from_spec(token_spec(server)))
    assert client._url("/api/v1/pods") == requested


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("https://admin:s3cret@10.0.0.1", "credentials in the URL"),
        ("https://s3cret@10.0.0.1", "credentials in the URL"),
        ("https://10.0.0.1:99999", "not a valid URL"),
        ("https://10.0.0.1:port", "not a valid URL"),
        ("https://10.0.0.1:0", "not a valid URL"),
        ("https://[::1", "not a valid URL"),
        ("https://", "not an http"),
        ("ftp://10.0.0.1", "not an http"),
        ("https://10.0.0.1/x?y=1", "query"),
        ("https://10.0.0.1/x\r\nHost: evil", "not a valid URL"),
        ("https://10.0.0.1/a b", "not a valid URL"),
    ],
)
def test_unusable_servers_are_refused_without_showing_credentials(
    server: str, message: str
) -> None:
    with pytest.raises(InvalidClusterConfig, match=message) as refused:
        access_from_spec(token_spec(server))
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (b"abc\r\nX-Evil: 1", "control characters"),
        (b"abc\x00", "control characters"),
        (b"\xff\xfe", "not UTF-8"),
        (b"   ", "empty"),
    ],
)
def test_tokens_that_would_break_the_header_are_refused(token: bytes, message: str) -> None:
    with pytest.raises(InvalidClusterConfig, match=message):
        access_from_spec(token_spec("https://10.0.0.1", token))
    with pytest.raises(InvalidClusterConfig, match=message):  # from a Secret
        access_from_spec({"apiserver": "https://10.0.0.1"}, secrets={"token": token})


@pytest.mark.parametrize("field", ["token", "password"])
def test_kubeconfig_credentials_that_would_break_the_header_are_refused(field: str) -> None:
    user = {"username": "a", field: "x\r\nX-Evil: 1"} if field == "password" else {field: "x\ny"}
    with pytest.raises(InvalidClusterConfig, match="control characters"):
        access_from_kubeconfig(kubeconfig("https://10.0.0.1", user))


def test_a_token_with_surrounding_space_is_trimmed() -> None:
    access = access_from_spec(token_spec("https://10.0.0.1", b"  t0ken\n"))
    assert access.headers["Authorization"] == "Bearer t0ken"


def test_credentials_over_plain_http_are_refused_unless_allowed() -> None:
    with pytest.raises(InvalidClusterConfig, match="plain HTTP"):
        access_from_spec(token_spec("http://10.0.0.1:8080"))
    with pytest.raises(InvalidClusterConfig, match="plain HTTP"):
        access_from_kubeconfig(kubeconfig("http://10.0.0.1", {"username": "a", "password": "b"}))
    allowed = access_from_spec(token_spec("http://10.0.0.1:8080"), allow_http_credentials=True)
    assert allowed.headers and "plain HTTP" in allowed.warnings[0]
    # Without credentials there is nothing to leak: plain HTTP is accepted as it is.
    anonymous = access_from_kubeconfig(kubeconfig("http://10.0.0.1", {}))
    assert not anonymous.headers and not anonymous.warnings


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://admin:s3cret@h:6443/x", "https://***@h:6443/x"),
        ("https://tok@h", "https://***@h"),
        ("https://h/a@b", "https://h/a@b"),
        ("not a url", "not a url"),
    ],
)
def test_redacted_urls_keep_everything_but_the_user_info(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_member_text_in_logs_is_one_bounded_line() -> None:
    text = printable("line one\r\nFAKE 2026 INFO admin logged in\x1b[2J" + "x" * 1000)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert text.startswith("line one\\r\\nFAKE") and len(text) < 320


def test_kopf_and_our_host_client_get_the_same_credentials(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """One provider: the host kubeconfig's files are read once, for both."""
    import trustme
    import yaml

    from clusterpedia.kube.host import host_access, host_credentials

    ca = trustme.CA()
    client = ca.issue_cert("admin")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem.bytes())
    (tmp_path / "admin.crt").write_bytes(client.cert_chain_pems[0].bytes())
    (tmp_path / "admin.key").write_bytes(client.private_key_pem.bytes())
    config = {
        "current-context": "host",
        "contexts": [{"name": "host", "context": {"cluster": "h", "user": "admin"}}],
        "clusters": [{"name": "h", "cluster": {"server": "https://127.0.0.1:6443",
                                                 "certificate-authority": "ca.crt"}}],
        "users": [{"name": "admin", "user": {"client-certificate": "admin.crt",
                                             "client-key": "admin.key"}}],
    }  # fmt: skip
    path = tmp_path / "host.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    credentials = host_credentials(str(path))
    assert credentials.server == "https://127.0.0.1:6443"
    assert credentials.ca_data == ca.cert_pem.bytes()
    assert credentials.certificate_data == client.cert_chain_pems[0].bytes()
    assert credentials.private_key_data == client.private_key_pem.bytes()
    assert credentials.token is None and not credentials.insecure
    assert host_access(str(path)).server == credentials.server
