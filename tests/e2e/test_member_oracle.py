"""The member is the oracle: for many generated label selectors and the member's own supported
field selectors, the names we answer with are exactly the names the member answers with.

Each database, two members with differently labelled ConfigMaps and Pods, ``clusterpedia run``
syncing both. The comparison runs after every write path a stored row can take:

1. **the initial list into an empty database**: every batch is hinted all new, so PostgreSQL
   copies rows straight into ``resources`` by binary COPY, MySQL and SQLite take their bulk
   insert (the path that stored PostgreSQL labels as JSON strings);
2. **watch events**: labels changed, objects created and deleted while we run, applied by the
   upsert path (PostgreSQL: staging table, then ``INSERT ... ON CONFLICT``) and the delete path;
3. **a restart and relist**: the member changed while we were down, so the relist's upserts of
   rows already stored (and the deletes of rows the member no longer has) run against a full
   table.

Every comparison is made on the per-cluster path (``.../clusters/<c>/...``, against that
member's answer) and on the all-clusters path (against the union of both members' answers).
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterpedia.apiserver.testing import PREFIX
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.objects import pediacluster
from clusterpedia.testing.product import ProductProcess
from clusterpedia.testing.waiting import eventually

CLUSTER_ANNOTATION = "shadow.clusterpedia.io/cluster-name"
KEYS = ("app", "tier", "shard", "n", "canary")
VALUES = {
    "app": ("web", "db", "cache"),
    "tier": ("a", "b"),
    "shard": ("s1", "s2", "s3", "s42"),
    "n": ("1", "2", "7", "10"),
    "canary": ("true",),
}
# Pod fields the member's field selectors support, with values that occur (and some that do
# not); "" is what Kubernetes compares a missing field as.
POD_FIELDS = {
    "metadata.name": ("pod-0", "pod-3", "nope"),
    "spec.nodeName": ("", "node-a", "node-b"),
    "spec.restartPolicy": ("Always", "Never", "OnFailure"),
    "spec.schedulerName": ("default-scheduler", "custom"),
    "spec.serviceAccountName": ("", "robot"),
    "status.phase": ("Pending", "Running"),
}
CONFIGMAP_FIELDS = {"metadata.name": ("cm-0", "cm-5", "nope"), "metadata.namespace": ("x",)}


@pytest.fixture(scope="module")
def dialect(database_url: str) -> str:
    return database_url.split(":")[0].split("+")[0].replace("postgresql", "pg")


@pytest.fixture(scope="module")
def namespace(dialect: str) -> str:
    return f"oracle-{dialect}"


def random_labels(rng: random.Random) -> dict[str, str]:
    return {key: rng.choice(VALUES[key]) for key in KEYS if rng.random() < 0.6}


def configmap(namespace: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"v": "1"},
    }


def pod(namespace: str, index: int, rng: random.Random) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": "nginx"}],
        "restartPolicy": rng.choice(("Always", "Never", "OnFailure")),
    }
    if rng.random() < 0.5:  # the others are unscheduled: no spec.nodeName at all
        spec["nodeName"] = rng.choice(("node-a", "node-b"))
    if rng.random() < 0.3:
        spec["schedulerName"] = "custom"
    if rng.random() < 0.4:
        spec["serviceAccountName"] = "robot"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"pod-{index}", "namespace": namespace, "labels": random_labels(rng)},
        "spec": spec,
    }


def apply(member: APIServer, objects: list[dict[str, Any]]) -> None:
    member.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


@pytest.fixture(scope="module")
def members(member_clusters: list[APIServer], namespace: str) -> list[APIServer]:
    """Each member: 40 ConfigMaps and 14 Pods with labels drawn from a small vocabulary, so
    selectors both match and miss."""
    for seed, member in enumerate(member_clusters):
        rng = random.Random(seed)
        objects: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        ]
        objects += [configmap(namespace, f"cm-{i}", random_labels(rng)) for i in range(40)]
        objects += [pod(namespace, i, rng) for i in range(14)]
        apply(member, objects)
    return member_clusters


def cluster_names(dialect: str) -> list[str]:
    return [f"oracle-{dialect}-1", f"oracle-{dialect}-2"]


@pytest.fixture(scope="module")
def clusters(
    host: APIServer, members: list[APIServer], dialect: str, namespace: str
) -> Iterator[dict[str, APIServer]]:
    by_name = dict(zip(cluster_names(dialect), members, strict=True))
    synced = {
        "group": "",
        "resources": ["pods", "configmaps"],
        "fieldSelector": f"metadata.namespace={namespace}",
    }
    objects = [
        pediacluster(name, member.kubeconfig.read_bytes(), synced)
        for name, member in by_name.items()
    ]
    host.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    yield by_name
    # The test deleted them while the product, which holds their finalizers, still ran; if
    # it failed before that, they go without it.
    host.kubectl("delete", "pediaclusters", *by_name, "--ignore-not-found", "--wait=false")
    for name in by_name:
        host.kubectl(
            "patch", "pediacluster", name, "--type=merge", "-p",
            '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip


class Oracle:
    """Asks a member and us the same question; the answers are sets of (cluster, name)."""

    def __init__(
        self, host: APIServer, product: ProductProcess, clusters: dict[str, APIServer], ns: str
    ):
        self.host, self.product, self.clusters, self.namespace = host, product, clusters, ns

    def members_answer(self, resource: str, params: dict[str, str]) -> dict[str, set[str]]:
        path = f"/api/v1/namespaces/{self.namespace}/{resource}"
        answers = {}
        for cluster, member in self.clusters.items():
            body = json.loads(member.get(f"{path}?{urllib.parse.urlencode(params)}"))
            answers[cluster] = {item["metadata"]["name"] for item in body["items"]}
        return answers

    def our_answer(
        self, resource: str, params: dict[str, str], *, cluster: str | None = None
    ) -> set[tuple[str, str]]:
        scope = f"/clusters/{cluster}" if cluster else ""
        path = f"{PREFIX}{scope}/api/v1/namespaces/{self.namespace}/{resource}"
        query = urllib.parse.urlencode({**params, "limit": "500"})
        try:
            body = json.loads(self.product.get_as_front_proxy(self.host, f"{path}?{query}"))
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{path}?{query}: {error.code} {error.read()[:300]!r}") from None
        assert not body["metadata"].get("continue"), "one page holds every answer"
        return {
            (item["metadata"]["annotations"][CLUSTER_ANNOTATION], item["metadata"]["name"])
            for item in body["items"]
        }

    def caught_up(self) -> bool:
        """Every object with the member's labels, on the all-clusters path and on each
        cluster's own (the phase's writes have all arrived, and every cluster's types are in
        the catalog each replica reads, cached for up to two seconds)."""
        for resource in ("configmaps", "pods"):
            theirs = set()
            for cluster, member in self.clusters.items():
                path = f"/api/v1/namespaces/{self.namespace}/{resource}"
                for item in json.loads(member.get(path))["items"]:
                    labels = json.dumps(item["metadata"].get("labels") or {}, sort_keys=True)
                    theirs.add((cluster, item["metadata"]["name"], labels))
            for scope in (None, *self.clusters):
                wanted = {entry for entry in theirs if scope is None or entry[0] == scope}
                if self._labelled(resource, scope) != wanted:
                    return False
        return True

    def _labelled(self, resource: str, cluster: str | None) -> set[tuple[str, str, str]] | None:
        """(cluster, name, labels) of what we serve; None while the path is not served yet
        (404 before the type's first sync, 400 before a cluster's types are read)."""
        scope = f"/clusters/{cluster}" if cluster else ""
        path = f"{PREFIX}{scope}/api/v1/namespaces/{self.namespace}/{resource}?limit=500"
        try:
            body = json.loads(self.product.get_as_front_proxy(self.host, path))
        except urllib.error.HTTPError as error:
            if error.code not in (400, 404):
                raise
            return None
        return {
            (
                item["metadata"]["annotations"][CLUSTER_ANNOTATION],
                item["metadata"]["name"],
                json.dumps(item["metadata"].get("labels") or {}, sort_keys=True),
            )
            for item in body["items"]
        }

    def compare(self, resource: str, params: dict[str, str]) -> list[str]:
        """The differences, described; empty when we answer as the members do."""
        members = self.members_answer(resource, params)
        differences = []
        for cluster, names in members.items():
            ours = {name for _, name in self.our_answer(resource, params, cluster=cluster)}
            if ours != names:
                differences.append(
                    f"{resource} {params} on {cluster}: member {sorted(names)}, we {sorted(ours)}"
                )
        union = {(cluster, name) for cluster, names in members.items() for name in names}
        ours_everywhere = self.our_answer(resource, params)
        if ours_everywhere != union:
            differences.append(
                f"{resource} {params} on all clusters: members {sorted(union)}, "
                f"we {sorted(ours_everywhere)}"
            )
        return differences


def label_requirement(rng: random.Random) -> str:
    key = rng.choice(KEYS)
    values = VALUES[key] + ("zzz",)
    kind = rng.choice(("=", "==", "!=", "in", "notin", "exists", "!exists", "gt", "lt"))
    if kind in ("=", "==", "!="):
        return f"{key}{kind}{rng.choice(values)}"
    if kind in ("in", "notin"):
        chosen = rng.sample(values, k=rng.randint(1, min(3, len(values))))
        return f"{key} {kind} ({','.join(chosen)})"
    if kind == "exists":
        return key
    if kind == "!exists":
        return f"!{key}"
    # > and < take integers (the member refuses others): only the numeric key
    return f"n{'>' if kind == 'gt' else '<'}{rng.choice(('0', '1', '5', '9'))}"


def field_requirement(rng: random.Random, fields: dict[str, tuple[str, ...]]) -> str:
    path = rng.choice(sorted(fields))
    operator = rng.choice(("=", "==", "!="))
    return f"{path}{operator}{rng.choice(fields[path])}"


def questions(seed: int) -> list[tuple[str, dict[str, str]]]:
    """Label selectors of one to three requirements on both kinds, every Pod field selector of
    the member's (each operator, each value, the empty one included), and mixes of the two."""
    rng = random.Random(seed)
    asked: list[tuple[str, dict[str, str]]] = []
    for _ in range(40):
        selector = ",".join(label_requirement(rng) for _ in range(rng.randint(1, 3)))
        asked.append((rng.choice(("configmaps", "pods")), {"labelSelector": selector}))
    for path, values in POD_FIELDS.items():
        for value in values:
            for operator in ("=", "!="):
                asked.append(("pods", {"fieldSelector": f"{path}{operator}{value}"}))
    for _ in range(10):
        fields = ",".join(field_requirement(rng, POD_FIELDS) for _ in range(rng.randint(2, 3)))
        asked.append(("pods", {"fieldSelector": fields}))
    for _ in range(10):
        asked.append(
            (
                "pods",
                {
                    "fieldSelector": field_requirement(rng, POD_FIELDS),
                    "labelSelector": label_requirement(rng),
                },
            )
        )
    for _ in range(5):
        asked.append(
            (
                "configmaps",
                {
                    "fieldSelector": field_requirement(rng, CONFIGMAP_FIELDS),
                    "labelSelector": label_requirement(rng),
                },
            )
        )
    return asked


def assert_same_answers(oracle: Oracle, *, seed: int, phase: str) -> None:
    eventually(oracle.caught_up, timeout=60, what=f"{phase}: every member object stored")
    differences = [
        d for resource, params in questions(seed) for d in oracle.compare(resource, params)
    ]
    assert not differences, (
        f"{phase} (seed {seed}): {len(differences)} answers differ, the first:\n"
        + "\n".join(d[:500] for d in differences[:8])
    )


def start(workdir: Path, host: APIServer, database_url: str) -> ProductProcess:
    return ProductProcess(
        workdir=workdir, kubeconfig=host.kubeconfig, storage_url=database_url
    ).start()


def test_selectors_answer_as_the_member_does_on_every_write_path(
    host: APIServer,
    clusters: dict[str, APIServer],
    namespace: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    members = list(clusters.values())
    product = start(tmp_path / "first", host, database_url)
    try:
        oracle = Oracle(host, product, clusters, namespace)
        assert_same_answers(oracle, seed=1, phase="after the initial list into an empty database")

        # Watch events: relabel, create and delete while we run.
        rng = random.Random(100)
        for member in members:
            changed = [configmap(namespace, f"cm-{i}", random_labels(rng)) for i in range(0, 40, 3)]
            changed += [configmap(namespace, f"cm-new-{i}", random_labels(rng)) for i in range(5)]
            changed += [pod(namespace, 20 + i, rng) for i in range(4)]
            apply(member, changed)
            member.kubectl("delete", "configmap", "-n", namespace, "cm-1", "cm-2", "cm-4")
            member.kubectl("delete", "pod", "-n", namespace, "pod-1", "--force", "--grace-period=0")
        assert_same_answers(oracle, seed=2, phase="after watch events")
    finally:
        assert product.stop() == 0, product.log()[-3000:]

    # Changes while we are down reach us by the relist at start.
    rng = random.Random(200)
    for member in members:
        changed = [configmap(namespace, f"cm-{i}", random_labels(rng)) for i in range(1, 40, 4)]
        apply(member, changed)
        member.kubectl("delete", "configmap", "-n", namespace, "cm-new-0", "cm-7")
    product = start(tmp_path / "second", host, database_url)
    try:
        oracle = Oracle(host, product, clusters, namespace)
        assert_same_answers(oracle, seed=3, phase="after a restart and relist")
        host.kubectl("delete", "pediaclusters", *clusters, "--timeout=60s")
    finally:
        assert product.stop() == 0, product.log()[-3000:]
