"""An informer as client-go runs one, with the official Python client: list, watch from the
list's resourceVersion, and resume from the last resourceVersion seen whenever the stream ends
or breaks. It can rotate between several servers (replicas) on every resume.

Tests use it to prove that a watch loses and repeats nothing: it records every event's
resourceVersion in order, and the state it ends with (cluster, name) -> member resourceVersion.
"""

from __future__ import annotations

import threading
from typing import Any

import kubernetes
import orjson
import urllib3

CLUSTER_ANNOTATION = "shadow.clusterpedia.io/cluster-name"
MEMBER_RV_ANNOTATION = "shadow.clusterpedia.io/member-resource-version"
Key = tuple[str, str]


def object_key(metadata: dict[str, Any]) -> Key:
    return (metadata["annotations"][CLUSTER_ANNOTATION], metadata["name"])


def member_rv(metadata: dict[str, Any]) -> int:
    return int(metadata["annotations"][MEMBER_RV_ANNOTATION])


class Informer:
    """Follows ``namespace`` of one resource in a background thread until :meth:`finish`.

    ``apis`` are ``CoreV1Api`` clients of one or more servers; ``method`` names the list
    method (``list_namespaced_pod``). ``timeout_seconds`` makes each watch end after that long,
    so the informer moves on to the next server."""

    def __init__(
        self,
        apis: list[Any],
        *,
        method: str,
        namespace: str,
        timeout_seconds: int | None = None,
    ):
        self.apis = apis
        self.method = method
        self.namespace = namespace
        self.timeout_seconds = timeout_seconds
        listed = getattr(apis[0], method)(namespace, _preload_content=False)
        body = _json(listed)
        self.start = int(body["metadata"]["resourceVersion"])
        self.state = {object_key(i["metadata"]): member_rv(i["metadata"]) for i in body["items"]}
        self.seen: list[int] = []
        self.last = self.start
        self.breaks = 0  # streams that failed (cut, server gone) rather than ended
        self.rounds = 0  # watch requests made
        self.errors: list[str] = []
        self.target: int | None = None
        self._thread = threading.Thread(target=self._run, name="informer", daemon=True)
        self._thread.start()

    def _done(self) -> bool:
        return self.target is not None and self.last >= self.target

    def _run(self) -> None:
        while not self._done():
            api = self.apis[self.rounds % len(self.apis)]
            self.rounds += 1
            watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            options: dict[str, Any] = {"allow_watch_bookmarks": True, "_request_timeout": 60}
            if self.timeout_seconds:
                options["timeout_seconds"] = self.timeout_seconds
            try:
                for event in watch.stream(  # type: ignore[no-untyped-call]
                    getattr(api, self.method),
                    self.namespace,
                    resource_version=str(self.last),
                    **options,
                ):
                    self._handle(event)
                    if self._done():
                        watch.stop()  # type: ignore[no-untyped-call]
            except (urllib3.exceptions.HTTPError, kubernetes.client.ApiException, OSError) as error:
                self.breaks += 1
                if isinstance(error, kubernetes.client.ApiException) and error.status == 410:
                    self.errors.append(f"410 at {self.last}")  # never expected in these tests
                    return
                threading.Event().wait(0.2)  # a server restarting: try the next one shortly

    def _handle(self, event: dict[str, Any]) -> None:
        metadata = event["raw_object"]["metadata"]
        rv = int(metadata["resourceVersion"])
        self.last = max(self.last, rv)
        if event["type"] == "BOOKMARK":
            return
        self.seen.append(rv)
        if event["type"] == "DELETED":
            self.state.pop(object_key(metadata), None)
        else:
            self.state[object_key(metadata)] = member_rv(metadata)

    def finish(self, target: int, *, timeout: float = 60) -> None:
        """Wait until every event up to ``target`` has been seen, then stop."""
        self.target = target
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the informer never reached {target}: at {self.last}")


def _json(response: Any) -> Any:
    try:
        return orjson.loads(response.data)
    finally:
        response.release_conn()
