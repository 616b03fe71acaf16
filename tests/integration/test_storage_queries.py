"""Golden behaviour of every search parameter on SQLite, PostgreSQL and MariaDB.

One dataset per module (seeded once per database) and one assertion style: the names a query
returns, in order where order is defined.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
import sqlalchemy as sa

from clusterpedia.search.params import query_from_request
from clusterpedia.storage.errors import InvalidQuery
from clusterpedia.storage.query import Query, TypeFilter
from clusterpedia.storage.reader import ResourceReader
from clusterpedia.storage.schema import resources
from clusterpedia.storage.writer import ResourceWriter
from clusterpedia.testing.objects import (
    DEPLOYMENTS,
    PODS,
    REPLICASETS,
    make_object,
    names,
    storage,
    upsert,
)

# The seeded engine lives as long as the module, so its tests share the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")

POD_TYPE = (TypeFilter("", "v1", "pods"),)


def pod(name: str, **kwargs):  # type: ignore[no-untyped-def]
    return make_object(PODS, name=name, **kwargs)


DATASET = {
    "c1": {
        PODS: [
            pod(
                "web-1",
                namespace="shop",
                rv="100",
                labels={"app": "web", "tier": "front", "n": "5"},
                owner="c1-rs-web",
                created="2024-03-01T10:00:00Z",
                spec={"containers": [{"name": "nginx", "image": "nginx:1.27"}], "replicas": 3},
                status={"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            ),
            pod(
                "web-2",
                namespace="shop",
                rv="99",
                labels={"app": "web", "tier": "back", "n": "12"},
                owner="c1-rs-web",
                created="2024-03-02T10:00:00Z",
                spec={
                    "containers": [
                        {"name": "a", "image": "redis:7"},
                        {"name": "b", "image": "nginx:1.27"},
                    ]
                },
                status={"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]},
            ),
            pod(
                "api-1",
                namespace="shop",
                rv="1000",
                labels={"app": "api"},
                created="2024-03-03T10:00:00Z",
                spec={"containers": [{"name": "api", "image": "api:2"}], "hostNetwork": True},
                status={"phase": "Running"},
            ),
            pod(
                "db-1",
                namespace="data",
                rv="7",
                created="2024-03-04T10:00:00Z",
                status={"phase": "Running"},
            ),
        ],
        DEPLOYMENTS: [make_object(DEPLOYMENTS, name="web", namespace="shop", uid="c1-deploy-web")],
        REPLICASETS: [
            make_object(
                REPLICASETS,
                name="web-abc",
                namespace="shop",
                uid="c1-rs-web",
                owner="c1-deploy-web",
            )
        ],
    },
    "c2": {
        PODS: [
            pod(
                "web-1",
                namespace="shop",
                cluster="c2",
                rv="5",
                labels={"app": "web"},
                created="2024-02-01T00:00:00Z",
                spec={"containers": [{"name": "x", "image": "nginx:1.26"}]},
                status={"phase": "Failed"},
            ),
            pod(
                "Web_Upper", namespace="other", cluster="c2", rv="6", created="2024-02-02T00:00:00Z"
            ),
        ]
    },
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def seeded(database_url: str) -> AsyncIterator[tuple[ResourceWriter, ResourceReader]]:
    async with storage(database_url, allow_where_sql=True) as (writer, reader):
        async with writer.engine.begin() as connection:
            await connection.execute(sa.delete(resources))
        for cluster, by_type in DATASET.items():
            for rtype, objects in by_type.items():
                await writer.apply(
                    cluster=cluster, rtype=rtype, changes=[upsert(o) for o in objects]
                )
        yield writer, reader


async def search(
    reader: ResourceReader, params: dict[str, list[str]] | None = None, **context
) -> list[str]:  # type: ignore[no-untyped-def]
    query = query_from_request(params or {}, types=context.pop("types", POD_TYPE), **context)
    page = await reader.list(query)
    return names(page.items)


def selector(text: str) -> dict[str, list[str]]:
    return {"labelSelector": [text]}


async def test_default_order_is_cluster_namespace_name(seeded) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    assert await search(reader) == ["db-1", "api-1", "web-1", "web-2", "Web_Upper", "web-1"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"clusters": ["c2"]}, ["Web_Upper", "web-1"]),
        ({"clusters": ["c1,c2"], "namespaces": ["data,other"]}, ["db-1", "Web_Upper"]),
        ({"names": ["web-1"]}, ["web-1", "web-1"]),
        ({"clusters": ["nope"]}, []),
        (selector("search.clusterpedia.io/clusters=c2"), ["Web_Upper", "web-1"]),
        (selector("search.clusterpedia.io/namespaces in (data)"), ["db-1"]),
        (
            selector("internalstorage.clusterpedia.io/fuzzy-name=eb"),
            ["web-1", "web-2", "Web_Upper", "web-1"],
        ),
        (selector("internalstorage.clusterpedia.io/fuzzy-name in (web,2)"), ["web-2"]),
        (selector("internalstorage.clusterpedia.io/fuzzy-name=b_u"), []),  # _ is not a wildcard
        ({"since": ["2024-03-02"]}, ["db-1", "api-1", "web-2"]),
        ({"before": ["2024-03-01T10:00:00Z"]}, ["Web_Upper", "web-1"]),
        ({"since": ["1706745600"], "before": ["2024-03-01"]}, ["Web_Upper", "web-1"]),
    ],
)
async def test_cluster_namespace_name_and_time_filters(seeded, params, expected) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    assert await search(reader, params) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app=web", ["web-1", "web-2", "web-1"]),
        ("app==web,tier=front", ["web-1"]),
        ("app!=web", ["db-1", "api-1", "Web_Upper"]),  # objects without the label match
        ("tier in (front,back)", ["web-1", "web-2"]),
        ("tier notin (front)", ["db-1", "api-1", "web-2", "Web_Upper", "web-1"]),
        ("tier", ["web-1", "web-2"]),
        ("!app", ["db-1", "Web_Upper"]),
        ("n>6", ["web-2"]),
        ("n<6", ["web-1"]),
        ("app=WEB", []),  # case-sensitive
    ],
)
async def test_label_selectors(seeded, text, expected) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    assert await search(reader, selector(text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("status.phase=Running", ["db-1", "api-1", "web-1"]),
        ("status.phase!=Running", ["web-2", "Web_Upper", "web-1"]),  # missing key matches
        ("status.phase in (Pending,Failed)", ["web-2", "web-1"]),
        ("status.phase notin (Running)", ["web-2", "Web_Upper", "web-1"]),
        ("metadata.name=api-1", ["api-1"]),
        ("metadata.labels['app']=api", ["api-1"]),
        ("spec.replicas=3", ["web-1"]),  # numbers compare as text
        ("spec.hostNetwork=true", ["api-1"]),  # so do booleans
        ("spec.hostNetwork", ["api-1"]),
        ("!spec.containers", ["db-1", "Web_Upper"]),
        ("spec.containers[].image=nginx:1.27", ["web-1", "web-2"]),
        ("spec.containers[].image!=nginx:1.27", ["db-1", "api-1", "Web_Upper", "web-1"]),
        ("spec.containers[].image in (redis:7,api:2)", ["api-1", "web-2"]),
        ("spec.containers[1].name=b", ["web-2"]),
        ("status.conditions[].type=Ready,status.phase=Running", ["web-1"]),
        ("status.conditions[].status=False", ["web-2"]),
        ("spec.containers[].name", ["api-1", "web-1", "web-2", "web-1"]),
        ("status.phase=running", []),  # case-sensitive
    ],
)
async def test_field_selectors(seeded, text, expected) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    assert sorted(await search(reader, {"fieldSelector": [text]})) == sorted(expected)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"ownerUID": ["c1-rs-web"]}, ["web-1", "web-2"]),
        ({"ownerUID": ["c1-deploy-web"], "ownerSeniority": ["1"]}, ["web-1", "web-2"]),
        ({"ownerUID": ["c1-deploy-web"], "ownerSeniority": ["2"]}, []),
        ({"ownerName": ["web-abc"]}, ["web-1", "web-2"]),
        ({"ownerName": ["web-abc"], "ownerGR": ["replicasets.apps"]}, ["web-1", "web-2"]),
        ({"ownerName": ["web-abc"], "ownerGR": ["deployments.apps"]}, []),
        (
            {"ownerName": ["web"], "ownerGR": ["deployments.apps"], "ownerSeniority": ["1"]},
            ["web-1", "web-2"],
        ),
        ({"ownerName": ["web"], "ownerSeniority": ["1"], "namespaces": ["data"]}, []),
        (selector("search.clusterpedia.io/owner-uid=c1-rs-web"), ["web-1", "web-2"]),
    ],
)
async def test_owner_search_by_uid_name_and_seniority(seeded, params, expected) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    assert await search(reader, params, cluster="c1") == expected


@pytest.mark.parametrize(
    ("orderby", "expected"),
    [
        ("name", ["Web_Upper", "api-1", "db-1", "web-1", "web-1", "web-2"]),
        ("name desc", ["web-2", "web-1", "web-1", "db-1", "api-1", "Web_Upper"]),
        ("namespace desc,name", ["api-1", "web-1", "web-1", "web-2", "Web_Upper", "db-1"]),
        ("created_at", ["web-1", "Web_Upper", "web-1", "web-2", "api-1", "db-1"]),
        ("resource_version desc", ["api-1", "web-1", "web-2", "db-1", "Web_Upper", "web-1"]),
        ("status.phase,name", ["Web_Upper", "web-1", "web-2", "api-1", "db-1", "web-1"]),
    ],
)
async def test_orderby(seeded, orderby, expected) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    # Byte order on all three databases: "Web_Upper" sorts before lowercase names.
    assert await search(reader, {"orderby": [orderby]}) == expected


@pytest.mark.parametrize("orderby", ["", "name", "created_at desc", "status.phase desc,name"])
async def test_paging_visits_every_row_once_in_order(seeded, orderby: str) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    params = {"orderby": [orderby]} if orderby else {}
    everything = await search(reader, params)
    seen: list[str] = []
    token = None
    for _ in range(10):
        page_params = {**params, "limit": ["2"], **({"continue": [token]} if token else {})}
        page = await reader.list(query_from_request(page_params, types=POD_TYPE))
        seen += names(page.items)
        token = page.continue_token
        if token is None:
            break
    assert seen == everything


async def test_remaining_count_and_offsets(seeded) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    page = await reader.list(
        query_from_request({"limit": ["4"], "withRemainingCount": ["true"]}, types=POD_TYPE)
    )
    assert (len(page.items), page.remaining_count) == (4, 2)
    offset_page = await reader.list(
        query_from_request(
            selector("search.clusterpedia.io/offset=4,search.clusterpedia.io/limit=1"),
            types=POD_TYPE,
        )
    )
    assert names(offset_page.items) == ["Web_Upper"] and offset_page.continue_token == "5"
    # The original's integer continue is an offset too.
    compat = await reader.list(
        query_from_request({"limit": ["10"], "continue": ["5"]}, types=POD_TYPE)
    )
    assert names(compat.items) == ["web-1"] and compat.continue_token is None


async def test_continue_tokens_are_bound_to_their_query(seeded) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    page = await reader.list(query_from_request({"limit": ["2"]}, types=POD_TYPE))
    assert page.continue_token
    other = {"limit": ["2"], "continue": [page.continue_token], "orderby": ["name"]}
    with pytest.raises(InvalidQuery, match="different query"):
        await reader.list(query_from_request(other, types=POD_TYPE))
    forged = base64.urlsafe_b64encode(
        orjson.dumps({"q": "x", "k": ["a'; DROP TABLE resources; --"]})
    )
    for token in ["garbage!", forged.decode(), "eyJxIjoxfQ"]:
        with pytest.raises(InvalidQuery):
            await reader.list(
                query_from_request({"limit": ["2"], "continue": [token]}, types=POD_TYPE)
            )


async def test_paging_over_concurrent_inserts_serves_no_row_twice(seeded) -> None:  # type: ignore[no-untyped-def]
    writer, reader = seeded
    seen: list[str] = []
    page = await reader.list(
        query_from_request({"limit": ["3"], "clusters": ["c1"]}, types=POD_TYPE)
    )
    seen += names(page.items)
    # Rows sorting before and after the cursor appear while the client pages.
    await writer.apply(
        cluster="c1",
        rtype=PODS,
        changes=[upsert(pod("aaa-new", namespace="aaa")), upsert(pod("zzz-new", namespace="zzz"))],
    )
    try:
        while page.continue_token:
            page = await reader.list(
                query_from_request(
                    {"limit": ["3"], "clusters": ["c1"], "continue": [page.continue_token]},
                    types=POD_TYPE,
                )
            )
            seen += names(page.items)
    finally:
        from clusterpedia.storage.records import Delete

        await writer.apply(
            cluster="c1", rtype=PODS, changes=[Delete("aaa", "aaa-new"), Delete("zzz", "zzz-new")]
        )
    assert seen == ["db-1", "api-1", "web-1", "web-2", "zzz-new"]


async def test_metadata_only_projection(seeded) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    page = await reader.list(
        query_from_request({"onlyMetadata": ["true"], "names": ["db-1"]}, types=POD_TYPE)
    )
    assert [orjson.loads(item.data)["name"] for item in page.items] == ["db-1"]
    assert "status" not in orjson.loads(page.items[0].data)


async def test_collections_span_resource_types(seeded) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    page = await reader.list(Query(types=(TypeFilter("apps"),), clusters=("c1",)))
    assert [(item.resource, item.kind) for item in page.items] == [
        ("deployments", "Deployment"),
        ("replicasets", "ReplicaSet"),
    ]


async def test_streaming_returns_every_object(seeded) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    streamed = [
        orjson.loads(data)["metadata"]["name"]
        async for data in reader.stream(Query(types=POD_TYPE))
    ]
    assert streamed == await search(reader)


async def test_where_sql_statement_is_parameterised(seeded) -> None:  # type: ignore[no-untyped-def]
    writer, reader = seeded
    assert await search(
        reader,
        {"whereSQLStatement": ["name = ? AND namespace = ?"], "whereSQLParam": ["db-1", "data"]},
    ) == ["db-1"]
    json_params = base64.b64encode(orjson.dumps(["api-1"])).decode()
    assert await search(
        reader, {"whereSQLStatement": ["name = ?"], "whereSQLJSONParams": [json_params]}
    ) == ["api-1"]
    strict = ResourceReader(writer.engine)
    with pytest.raises(InvalidQuery, match="disabled"):
        await strict.list(query_from_request({"whereSQLStatement": ["1=1"]}, types=POD_TYPE))


def where(statement: str, *params: object) -> dict[str, list[str]]:
    if not params:
        return {"whereSQLStatement": [statement]}
    encoded = base64.b64encode(orjson.dumps(list(params))).decode()
    return {"whereSQLStatement": [statement], "whereSQLJSONParams": [encoded]}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (where("1=1"), ["db-1", "api-1", "web-1", "web-2", "Web_Upper", "web-1"]),
        (where("cluster = 'c2' AND NOT (name = 'web-1')"), ["Web_Upper"]),
        (
            where("name IN (?, ?) OR namespace <> 'shop'", "api-1", "web-2"),
            ["db-1", "api-1", "web-2", "Web_Upper"],
        ),
        (where("name LIKE 'web%'"), ["web-1", "web-2", "web-1"]),  # case-sensitive everywhere
        (where("name NOT LIKE '%-_'"), ["Web_Upper"]),
        (where("name LIKE 'Web\\_%'"), ["Web_Upper"]),
        (where("lower(name) = 'web_upper'"), ["Web_Upper"]),
        (where("length(name) BETWEEN 4 AND ?", 5), ["db-1", "api-1", "web-1", "web-2", "web-1"]),
        (
            where("created_at >= '2024-03-02' AND created_at < ?", "2024-03-04T00:00:00Z"),
            ["api-1", "web-2"],
        ),
        (
            where("deleted_at IS NULL AND \"group\" = '' AND `version` = 'v1'"),
            ["db-1", "api-1", "web-1", "web-2", "Web_Upper", "web-1"],
        ),
        (where("object->'status'->>'phase' = 'Failed'"), ["web-1"]),
        (where("JSON_UNQUOTE(JSON_EXTRACT(object, '$.spec.replicas')) = 3"), ["web-1"]),
        (where("object->>'$.spec.containers[1].image' = ?", "nginx:1.27"), ["web-2"]),
        (where("object->'spec'->>'hostNetwork' = TRUE"), ["api-1"]),
        (
            where("coalesce(object->'status'->>'phase', 'none') IN ('Pending', 'none')"),
            ["web-2", "Web_Upper"],
        ),
        # Columns compare as text, as the original's do: '7' >= '7', '99' >= '7', '100' < '7'.
        (where("resources.uid IS NOT NULL AND resource_version >= '7'"), ["db-1", "web-2"]),
    ],
)
async def test_where_sql_conditions_read_the_row_alone(seeded, params, expected) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    assert await search(reader, params) == expected


@pytest.mark.parametrize(
    ("statement", "params", "message"),
    [
        ("1=1) OR (1=1", (), "unexpected"),
        ("name = 'x') OR (1=1", (), "unexpected"),
        ("(SELECT count(*) FROM resources r2 WHERE r2.cluster = ?) > 0", ("c2",), "unexpected"),
        ("name IN (SELECT name FROM change_log)", (), "unknown column"),
        ("EXISTS (SELECT 1 FROM resources)", (), "unknown function"),
        ("cluster = 'c1' UNION SELECT 1", (), "unexpected"),
        ("1=1; DELETE FROM resources", (), "unexpected ';'"),
        ("1=1 -- comment", (), "unexpected"),
        ("1=1 /* x */", (), "unexpected"),
        ("pg_sleep(5) IS NULL", (), "unknown function"),
        ("sleep(5) = 0", (), "unknown function"),
        ("version() = 'x'", (), "unknown function"),
        ("current_user = 'x'", (), "unknown column"),
        ("change_log.rv > 0", (), "unknown table"),
        ("object = 'x'", (), "object->"),
        ("labels = 'x'", (), "unknown column"),
        ("name = NULL", (), "IS NULL"),
        ("created_at > 'yesterday'", (), "invalid time"),
        ("length(name) > 'abc'", (), "integer"),
        ("name = ?", (), "more '?'"),
        ("name = ?", ("a", "b"), "parameters"),
        ("name LIKE name", (), "text pattern"),
        ("JSON_EXTRACT(labels, '$.app') = 'web'", (), "object column only"),
        ("object->>'$.spec.containers[*].image' = 'x'", (), "invalid JSON path"),
        ("object->>'$.spec.containers[].image' = 'x'", (), "may not use"),
        ("(" * 40 + "name = 'x'" + ")" * 40, (), "deeper"),
        ("name = 'x' OR " * 600 + "1=1", (), "longer than"),
    ],
)
async def test_where_sql_outside_the_grammar_is_refused(seeded, statement, params, message) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    with pytest.raises(InvalidQuery, match=message) as refused:
        await search(reader, where(statement, *params), cluster="c1")
    assert refused.value.reason == "BadRequest"
    assert len(await search(reader)) == 6  # nothing changed


async def test_where_sql_cannot_reach_other_clusters_rows(seeded) -> None:  # type: ignore[no-untyped-def]
    """The break-out of the issue: a condition ANDed to the cluster filter stays inside it."""
    _, reader = seeded
    for statement in ("1=1 OR 1=1", "cluster = 'c2' OR cluster <> 'c2'", "TRUE OR name = 'x'"):
        assert await search(reader, where(statement), cluster="c1") == [
            "db-1",
            "api-1",
            "web-1",
            "web-2",
        ]
    assert await search(reader, where("cluster = 'c2'"), cluster="c1") == []


async def test_where_sql_non_ascii_values_match_nothing_without_an_error(seeded) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    assert await search(reader, where("name = ?", "wéb-1")) == []
    assert await search(reader, where("name IN ('ü', 'web-2')")) == ["web-2"]
    assert await search(reader, where("name LIKE 'wé%'")) == []
    assert await search(reader, where("lower(name) <> 'ß'")) == [
        "db-1",
        "api-1",
        "web-1",
        "web-2",
        "Web_Upper",
        "web-1",
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"names": ["x' OR '1'='1"]},
        {"clusters": ["c1'; DROP TABLE resources; --"]},
        {"namespaces": ['" OR 1=1 --']},
        selector("internalstorage.clusterpedia.io/fuzzy-name=a-b"),
        {"fieldSelector": ["status.phase=x'OR'1'"]},
        {"fieldSelector": ["status.phase=x\\,y\\=z"]},
    ],
)
async def test_injection_attempts_match_nothing_and_change_nothing(seeded, params) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    assert await search(reader, params) == []
    assert len(await search(reader)) == 6


@pytest.mark.parametrize(
    "params",
    [
        {"fieldSelector": ["status.phase=x' OR '1'='1"]},
        {"fieldSelector": ['status.phase=\\"); DROP TABLE resources; --']},
        {"fieldSelector": ["metadata.annotations['a' OR 1=1]=x"]},
        {"labelSelector": ["app=x' OR '1'='1"]},
        {"orderby": ["name; DROP TABLE resources"]},
        {"ownerName": ["a"], "ownerSeniority": ["1; DROP"]},
    ],
)
async def test_injection_attempts_that_do_not_parse_are_rejected(seeded, params) -> None:  # type: ignore[no-untyped-def]
    _, reader = seeded
    with pytest.raises(InvalidQuery):
        await search(reader, params, cluster="c1")
    assert len(await search(reader)) == 6
