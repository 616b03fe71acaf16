"""Our Table of a custom resource against the member kube-apiserver's own, cell for cell.

The CRD's printer columns use every JSONPath form kubectl's dialect has (filters, wildcards,
slices, unions, recursive descent, escapes) and every column type; the member renders the
objects with client-go's JSONPath, we with ``apiserver/jsonpath.py``.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import orjson
import yaml

from clusterpedia.apiserver.tables import TableBuilder
from clusterpedia.storage import SyncedType
from clusterpedia.sync.resource_negotiator import printer_columns
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.objects import printed_crd
from clusterpedia.testing.waiting import eventually

COLUMNS = [
    ("Size", "integer", ".spec.size"),
    ("Ratio", "number", ".spec.ratio"),
    ("RatioText", "string", ".spec.ratio"),
    ("Big", "string", ".spec.big"),
    ("Enabled", "boolean", ".spec.enabled"),
    ("EnabledText", "string", ".spec.enabled"),
    ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
    ("NotReady", "string", ".status.conditions[?(@.type!='Ready')].type"),
    ("First", "string", ".spec.items[*].name"),
    ("Last", "string", ".spec.items[-1].name"),
    ("Second", "string", ".spec.items[1:].name"),
    ("Union", "string", ".spec.items[2,0].name"),
    ("Stepped", "string", ".spec.items[1::2].name"),
    ("ZeroStep", "string", ".spec.items[::0].name"),
    ("AllSliced", "string", ".spec.items[*]"),
    ("Heavy", "string", ".spec.items[?(@.weight>2)].name"),
    ("Tagged", "string", ".spec.items[?(@.tag)].name"),
    ("Weight", "integer", '.spec.items[?(@.name=="b")].weight'),
    ("Image", "string", "..image"),
    ("Labels", "string", ".spec.labels"),
    ("Items", "string", ".spec.items"),
    ("Note", "string", ".metadata.annotations.example\\.io/note"),
    ("Quoted", "string", ".metadata.annotations['example.io/note']"),
    ("Missing", "string", ".spec.missing"),
    ("OutOfRange", "string", ".spec.items[9].name"),
    ("Mismatch", "string", '.spec.items[?(@.weight=="5")].name'),
    ("SizeAsBool", "boolean", ".spec.size"),
]
CRD = printed_crd("columns.example.io", "gizmos", "Gizmo", COLUMNS)
GIZMOS = [
    {
        "metadata": {"name": "full", "annotations": {"example.io/note": "hello"}},
        "spec": {
            "size": 3,
            "ratio": 2.5,
            "big": 1234567.0,
            "enabled": True,
            "items": [
                {"name": "a", "weight": 1, "image": "nginx"},
                {"name": "b", "weight": 5, "tag": "x"},
                {"name": "c", "weight": 9, "nested": {"image": "redis"}},
            ],
            "labels": {"zone": "z1", "app": "web"},
        },
        "status": {
            "conditions": [
                {"type": "Synced", "status": "False"},
                {"type": "Ready", "status": "True"},
            ]
        },
    },
    {"metadata": {"name": "bare"}, "spec": {"items": []}},
]


def member_table(member: APIServer, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{member.url}{path}",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    with urllib.request.urlopen(request, context=member.ssl_context(), timeout=10) as response:
        table: dict[str, Any] = json.loads(response.read())
    return table


def test_custom_resource_cells_equal_the_members(member_clusters: list[APIServer]) -> None:
    member = member_clusters[0]
    member.kubectl("apply", "-f", "-", input=yaml.safe_dump(CRD))
    member.kubectl("wait", "--for=condition=Established", "crd/gizmos.columns.example.io")
    member.kubectl("create", "namespace", "columns", check=False)
    objects = [
        {"apiVersion": "columns.example.io/v1", "kind": "Gizmo", **g, "metadata": {
            **g["metadata"], "namespace": "columns"}}
        for g in GIZMOS
    ]  # fmt: skip
    member.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    path = "/apis/columns.example.io/v1/namespaces/columns/gizmos"

    def listed() -> dict[str, Any] | None:
        table = member_table(member, path)
        return table if len(table["rows"]) == len(GIZMOS) else None

    theirs = eventually(listed, what="the member lists both gizmos")
    stored = json.loads(member.get(path))["items"]
    columns = printer_columns([json.loads(member.get("/apis/apiextensions.k8s.io/v1/"
                                                    "customresourcedefinitions/"
                                                    "gizmos.columns.example.io"))])  # fmt: skip
    synced = SyncedType(
        "m", "columns.example.io", "v1", "gizmos", "Gizmo", True,
        printer_columns=columns[("columns.example.io", "v1", "gizmos")],
    )  # fmt: skip
    builder = TableBuilder(synced, group="columns.example.io", resource="gizmos", include="None")

    their_names = [c["name"] for c in theirs["columnDefinitions"]]
    our_names = [c["name"] for c in builder.definitions()]
    assert our_names[0] == "Cluster"
    # The member's columns: Name, the printer columns, and Age (added for CRDs).
    assert their_names[: len(COLUMNS) + 1] == our_names[1:]
    by_name = {obj["metadata"]["name"]: obj for obj in stored}
    for row in theirs["rows"]:
        name = row["cells"][0]
        ours = builder.row(orjson.dumps(by_name[name]), cluster="m")["cells"][1:]
        expected = row["cells"][: len(COLUMNS) + 1]
        assert ours == expected, f"{name}: " + ", ".join(
            f"{column}: ours {a!r}, member {b!r}"
            for column, a, b in zip(our_names[1:], ours, expected, strict=True)
            if a != b
        )
