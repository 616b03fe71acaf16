"""Kubernetes-shaped test objects and a ready storage, shared by tests and benchmarks."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from clusterpedia.gvr import ResourceType
from clusterpedia.storage.engine import create_engine
from clusterpedia.storage.migrate import ensure_schema
from clusterpedia.storage.query import Item
from clusterpedia.storage.reader import ResourceReader
from clusterpedia.storage.records import Upsert, upsert_from_object
from clusterpedia.storage.writer import ResourceWriter

PODS = ResourceType(group="", version="v1", resource="pods", kind="Pod")
DEPLOYMENTS = ResourceType(group="apps", version="v1", resource="deployments", kind="Deployment")
REPLICASETS = ResourceType(group="apps", version="v1", resource="replicasets", kind="ReplicaSet")


def make_object(
    rtype: ResourceType,
    *,
    name: str,
    namespace: str = "default",
    cluster: str = "c1",
    rv: str = "1",
    uid: str | None = None,
    labels: dict[str, str] | None = None,
    owner: str | None = None,
    created: str = "2024-03-01T10:00:00Z",
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"{cluster}-{namespace}-{name}",
        "resourceVersion": rv,
        "creationTimestamp": created,
        "annotations": {"shadow.clusterpedia.io/cluster-name": cluster},
    }
    if labels:
        metadata["labels"] = labels
    if owner:
        metadata["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "X", "name": "o", "uid": owner, "controller": True}
        ]
    obj: dict[str, Any] = {
        "apiVersion": rtype.api_version,
        "kind": rtype.kind,
        "metadata": metadata,
    }
    if spec is not None:
        obj["spec"] = spec
    if status is not None:
        obj["status"] = status
    return obj


def pediacluster(name: str, kubeconfig: bytes, *sync_resources: dict[str, Any]) -> dict[str, Any]:
    """A PediaCluster syncing ``sync_resources`` from the cluster ``kubeconfig`` reaches."""
    return {
        "apiVersion": "cluster.clusterpedia.io/v1alpha2",
        "kind": "PediaCluster",
        "metadata": {"name": name},
        "spec": {
            "kubeconfig": base64.b64encode(kubeconfig).decode(),
            "syncResources": list(sync_resources),
        },
    }


def configmaps_of(namespace: str) -> dict[str, Any]:
    """A syncResources entry: the ConfigMaps of one namespace."""
    return {
        "group": "",
        "resources": ["configmaps"],
        "fieldSelector": f"metadata.namespace={namespace}",
    }


def upsert(obj: dict[str, Any]) -> Upsert:
    return upsert_from_object(obj)


def names(items: list[Item]) -> list[str]:
    """The object names of a page's items, in order."""
    return [orjson.loads(item.data)["metadata"]["name"] for item in items]


@asynccontextmanager
async def storage(
    url: str, *, allow_where_sql: bool = False
) -> AsyncIterator[tuple[ResourceWriter, ResourceReader]]:
    """A migrated database behind a writer and a reader; the engine is disposed afterwards."""
    engine = create_engine(url)
    reader = ResourceReader(engine, allow_where_sql=allow_where_sql)
    try:
        await ensure_schema(engine)
        yield ResourceWriter(engine), reader
    finally:
        await reader.close()
        await engine.dispose()


def realistic_pod(
    index: int, *, cluster: str = "c1", namespaces: int = 50, apps: int = 1000
) -> dict[str, Any]:
    """A ~3 KB Pod shaped like a real Deployment's pod (containers, env, volumes, status).

    Deterministic in ``index``: pod ``i`` belongs to app ``i % apps`` and to the ReplicaSet
    ``rs-<app>`` (uid ``<cluster>-rs-<app>``), which the owner search benchmarks use.
    """
    app = f"app-{index % apps}"
    namespace = f"ns-{index % namespaces}"
    name = f"{app}-{index:07d}"
    rs_uid = f"{cluster}-rs-{index % apps}"
    env = [{"name": f"SETTING_{n}", "value": f"value-{index}-{n}"} for n in range(12)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"{cluster}-pod-{index:08d}-0000-0000-000000000000",
            "resourceVersion": str(1000 + index),
            "creationTimestamp": f"2024-{1 + index % 12:02d}-{1 + index % 28:02d}T10:00:00Z",
            "labels": {
                "app": app,
                "pod-template-hash": f"{index % 97:05d}",
                "tier": ("front", "back", "db")[index % 3],
            },
            "annotations": {"shadow.clusterpedia.io/cluster-name": cluster},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"rs-{app}",
                    "uid": rs_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": f"registry.example/{app}:1.{index % 20}",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "env": env,
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"cpu": "1", "memory": "512Mi"},
                    },
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/app"},
                        {
                            "name": "kube-api-access",
                            "mountPath": "/var/run/secrets",
                            "readOnly": True,
                        },
                    ],
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz", "port": 8080},
                        "periodSeconds": 10,
                    },
                    "readinessProbe": {
                        "httpGet": {"path": "/ready", "port": 8080},
                        "periodSeconds": 5,
                    },
                    "imagePullPolicy": "IfNotPresent",
                    "terminationMessagePath": "/dev/termination-log",
                },
                {
                    "name": "sidecar",
                    "image": "registry.example/proxy:2.4",
                    "args": ["--listen=:15001", "--upstream=127.0.0.1:8080", "--log-level=info"],
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                },
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": f"{app}-config"}},
                {
                    "name": "kube-api-access",
                    "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
                },
            ],
            "nodeName": f"node-{index % 40}",
            "serviceAccountName": app,
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
            ],
        },
        "status": {
            "phase": "Pending" if index % 7 == 0 else "Running",
            "conditions": [
                {"type": kind, "status": "True", "lastTransitionTime": "2024-01-01T10:00:05Z"}
                for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "hostIP": f"10.0.{index % 40}.1",
            "podIP": f"10.{index % 250}.{(index // 250) % 250}.{index % 200 + 2}",
            "startTime": "2024-01-01T10:00:00Z",
            "qosClass": "Burstable",
            "containerStatuses": [
                {
                    "name": "main",
                    "ready": True,
                    "restartCount": index % 3,
                    "image": f"registry.example/{app}:1.{index % 20}",
                    "imageID": f"registry.example/{app}@sha256:{index:064x}",
                    "containerID": f"containerd://{index:064x}",
                    "started": True,
                    "state": {"running": {"startedAt": "2024-01-01T10:00:04Z"}},
                }
            ],
        },
    }


def gadget_crd(group: str) -> dict[str, Any]:
    """A namespaced CRD ``gadgets.<group>`` (short name ``gd``) with printer columns Color and
    Size, for tests and the playground."""
    columns = [("Color", "string", ".spec.color"), ("Size", "integer", ".spec.size")]
    return printed_crd(group, "gadgets", "Gadget", columns, short_names=["gd"])


def printed_crd(
    group: str,
    plural: str,
    kind: str,
    columns: list[tuple[str, str, str]],
    *,
    short_names: list[str] | None = None,
) -> dict[str, Any]:
    """A namespaced CRD ``<plural>.<group>`` (v1, any fields) with these printer columns, each
    (name, type, jsonPath)."""
    names: dict[str, Any] = {"plural": plural, "singular": kind.lower(), "kind": kind}
    if short_names:
        names["shortNames"] = short_names
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": names,
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                    "additionalPrinterColumns": [
                        {"name": name, "type": type_, "jsonPath": path}
                        for name, type_, path in columns
                    ],
                }
            ],
        },
    }
