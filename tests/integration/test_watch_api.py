"""Watch through the real aggregation layer on every database: kubectl -w, the official Python
client as an informer (list, watch from the list's resourceVersion, resume from the last one
seen), cuts by the host's request timeout, and 410 after pruning.

Changes are written with the storage writer (as a sync worker would), so each test knows
exactly which changes the log holds; tests/e2e/test_watch.py runs the same against members.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator

import kubernetes
import pytest

from clusterpedia.apiserver.testing import PREFIX, ServerThread, register_apiservice, start_server
from clusterpedia.apiserver.watch import WatchSettings
from clusterpedia.testing.controlplane import APIServer, ControlPlane
from clusterpedia.testing.informer import CLUSTER_ANNOTATION, MEMBER_RV_ANNOTATION, Informer
from clusterpedia.testing.store import Store
from clusterpedia.testing.waiting import eventually

HOST = "aggregator-short-timeout"
REQUEST_TIMEOUT = 10  # the host cuts proxied requests after this many seconds
CLUSTERS = ("w1", "w2")


@pytest.fixture(scope="module")
def host(control_plane: ControlPlane) -> APIServer:
    """A host whose aggregation layer cuts long requests quickly, as every host does after its
    --request-timeout (60 s by default): our watch URLs are not long-running to it."""
    return control_plane.apiservers.get(HOST) or control_plane.add_apiserver(
        HOST, front_proxy=True, extra_args=(f"--request-timeout={REQUEST_TIMEOUT}s",)
    )


@pytest.fixture(scope="module")
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url, clusters=CLUSTERS)
    yield store
    store.close()


@pytest.fixture(scope="module")
def server(
    host: APIServer, store: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    thread = start_server(
        host,
        store.url,
        cert_dir=str(tmp_path_factory.mktemp("certs")),
        watch=WatchSettings(bookmark_interval=1.0, capacity=10_000),
        watch_poll_interval=0.05,
    )
    register_apiservice(host, port=thread.port, ca_pem=thread.ca_pem)
    yield thread
    thread.stop()


def core_api(host: APIServer) -> kubernetes.client.CoreV1Api:
    """The official client, configured from the host's kubeconfig, through the aggregator."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(host.kubeconfig), client_configuration=configuration
    )
    configuration.host += PREFIX
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))


def test_kubectl_watch_shows_table_events_from_both_clusters(
    host: APIServer, server: ServerThread, store: Store
) -> None:
    store.put("w1", "before", rv=1)
    command = [
        str(host.assets.kubectl), f"--kubeconfig={host.kubeconfig}",
        f"--server={host.url}{PREFIX}", "get", "pods", "-A", "-l", "app=w", "-w",
        "--output-watch-events",
    ]  # fmt: skip
    lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as kc:
        assert kc.stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(kc.stdout.readline, "")))
        reader.start()
        eventually(lambda: any("before" in line for line in lines), timeout=20, what="the list")
        store.put("w1", "kw-a", rv=1)
        store.put("w2", "kw-b", rv=1)
        store.put("w2", "kw-b", rv=2, tier="x")
        store.delete("w1", "kw-a")
        store.put("w2", "other-app", rv=1, app="not-w")  # filtered out by -l app=w
        # Two clusters' changes committed together reach the watch in one feed read.
        both = [
            threading.Thread(target=store.put, args=(cluster, "kw-c"), kwargs={"rv": 1})
            for cluster in CLUSTERS
        ]
        for thread in both:
            thread.start()
        for thread in both:
            thread.join()

        def seen() -> set[tuple[str, ...]]:
            return {tuple(line.split()[:4]) for line in lines}

        expected = {
            ("ADDED", "watch", "w1", "kw-a"),
            ("ADDED", "watch", "w2", "kw-b"),
            ("MODIFIED", "watch", "w2", "kw-b"),
            ("DELETED", "watch", "w1", "kw-a"),
            ("ADDED", "watch", "w1", "kw-c"),
            ("ADDED", "watch", "w2", "kw-c"),
        }
        eventually(lambda: expected <= seen(), timeout=8, what=f"{expected} in {lines}")
        kc.terminate()
        reader.join(10)
    assert lines[0].split()[:4] == ["EVENT", "NAMESPACE", "CLUSTER", "NAME"], lines
    assert not any("other-app" in line for line in lines)
    store.delete("w1", "before")


def test_a_watcher_that_goes_away_is_forgotten(
    host: APIServer, server: ServerThread, store: Store
) -> None:
    """A client closing a quiet watch (no events to write) frees it on the server at once."""
    assert server.server is not None
    feed = server.server.feed
    eventually(lambda: feed.watchers == 0, timeout=10, what="no watchers left by other tests")
    request = urllib.request.Request(f"{host.url}{PREFIX}/api/v1/namespaces/quiet/pods?watch=true")
    response = urllib.request.urlopen(request, context=host.ssl_context(), timeout=30)
    eventually(lambda: feed.watchers == 1, timeout=10, what="the watch is registered")
    response.close()
    eventually(lambda: feed.watchers == 0, timeout=10, what="the closed watch is forgotten")


def test_watch_events_filters_and_bookmarks_with_the_python_client(
    host: APIServer, server: ServerThread, store: Store
) -> None:
    api = core_api(host)
    listed = api.list_namespaced_pod("watch", label_selector="app=w")
    start = int(listed.metadata.resource_version)
    store.put("w1", "py-1", rv=1)
    store.put("w2", "py-2", rv=1, app="elsewhere")
    store.put("w1", "py-1", rv=2, tier="y")
    store.delete("w1", "py-1")
    events = []
    for event in kubernetes.watch.Watch().stream(
        api.list_namespaced_pod,
        "watch",
        label_selector="app=w",
        resource_version=str(start),
        allow_watch_bookmarks=True,
        timeout_seconds=3,
    ):
        events.append(event)
    changes = [e for e in events if e["type"] != "BOOKMARK"]
    assert [(e["type"], e["object"].metadata.name) for e in changes] == [
        ("ADDED", "py-1"), ("MODIFIED", "py-1"), ("DELETED", "py-1"),
    ]  # fmt: skip
    rvs = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in changes]
    assert start < rvs[0] < rvs[1] < rvs[2]
    annotations = [e["object"].metadata.annotations for e in changes]
    assert [a[CLUSTER_ANNOTATION] for a in annotations] == ["w1", "w1", "w1"]
    assert [a[MEMBER_RV_ANNOTATION] for a in annotations] == [
        "1",
        "2",
        "2",
    ]  # DELETED: the last state
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, "allowWatchBookmarks with a 1 s interval over 3 s sends bookmarks"
    assert int(bookmarks[-1]["raw_object"]["metadata"]["resourceVersion"]) >= rvs[-1]
    # The list's objects carry the global resourceVersion, and the list is not newer than them.
    store.put("w2", "py-3", rv=1)
    relisted = api.list_namespaced_pod("watch", label_selector="app=w")
    item = next(p for p in relisted.items if p.metadata.name == "py-3")
    assert int(item.metadata.resource_version) <= int(relisted.metadata.resource_version)
    store.delete("w2", "py-3")
    store.delete("w2", "py-2")


class Churn:
    """Random creates, updates and deletes of pods in both clusters until stopped; the final
    state is what an informer must converge to."""

    def __init__(self, store: Store, *, namespace: str, rate: float):
        self.store = store
        self.namespace = namespace
        self.rate = rate
        self.state: dict[tuple[str, str], int] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        generator = random.Random(7)
        while not self.stopped.is_set():
            cluster, name = generator.choice(CLUSTERS), f"c{generator.randrange(20)}"
            key = (cluster, name)
            if key in self.state and generator.random() < 0.3:
                self.store.delete(cluster, name, self.namespace)
                del self.state[key]
            else:
                self.state[key] = self.state.get(key, 0) + 1
                self.store.put(cluster, name, rv=self.state[key], namespace=self.namespace)
            time.sleep(1 / self.rate)

    def __enter__(self) -> Churn:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join(30)


def test_informer_resumes_after_the_host_cuts_the_stream_and_loses_nothing(
    host: APIServer, server: ServerThread, store: Store
) -> None:
    api = core_api(host)
    with Churn(store, namespace="churn", rate=40) as churn:
        watcher = Informer([api], method="list_namespaced_pod", namespace="churn")
        time.sleep(REQUEST_TIMEOUT * 2.5)
    head = store.run(store.log.marks()).head
    watcher.finish(head)
    assert watcher.breaks >= 1, "the host's request timeout should have cut the watch"
    assert watcher.state == churn.state
    # Exactly the logged changes of this namespace after the list, in order, each once.
    assert watcher.seen == store.logged_pod_rvs(after=watcher.start, upto=head, namespace="churn")


def test_a_pruned_resource_version_gets_410_and_a_relist_converges(
    host: APIServer, server: ServerThread, store: Store
) -> None:
    api = core_api(host)
    start = int(api.list_namespaced_pod("watch").metadata.resource_version)
    for i in range(5):
        store.put("w1", f"old-{i}", rv=1)
    store.run(store.log.prune(max_age=None, max_events=2))
    with pytest.raises(kubernetes.client.ApiException) as expired:
        for _ in kubernetes.watch.Watch().stream(
            api.list_namespaced_pod, "watch", resource_version=str(start), timeout_seconds=2
        ):
            pass
    assert expired.value.status == 410
    relisted = api.list_namespaced_pod("watch")
    assert {f"old-{i}" for i in range(5)} <= {p.metadata.name for p in relisted.items}
    store.put("w1", "old-0", rv=2)
    events = list(
        kubernetes.watch.Watch().stream(
            api.list_namespaced_pod,
            "watch",
            resource_version=relisted.metadata.resource_version,
            timeout_seconds=2,
        )
    )
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("MODIFIED", "old-0")]
    raw = json.dumps(events[0]["raw_object"])
    assert '"resourceVersion"' in raw
