"""The search language: selectors, field paths, times, orderby and URL/label precedence."""

from __future__ import annotations

from datetime import datetime

import pytest

from clusterpedia.search.params import (
    forward_requested,
    forwarded_query,
    parse_order_by,
    query_from_request,
)
from clusterpedia.search.selectors import (
    parse_field_path,
    parse_field_selector,
    parse_label_selector,
)
from clusterpedia.search.times import parse_search_time
from clusterpedia.storage.errors import InvalidQuery
from clusterpedia.storage.query import OrderBy, OwnerFilter
from clusterpedia.storage.selection import FieldPath, FieldRequirement, Index, Key, Requirement


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app", [Requirement("app", "exists")]),
        ("!app", [Requirement("app", "!exists")]),
        ("app=web", [Requirement("app", "in", ("web",))]),
        ("app==web", [Requirement("app", "in", ("web",))]),
        ("app!=web", [Requirement("app", "notin", ("web",))]),
        ("tier in (a, b)", [Requirement("tier", "in", ("a", "b"))]),
        ("tier notin (a)", [Requirement("tier", "notin", ("a",))]),
        ("n>3,n<10", [Requirement("n", "gt", ("3",)), Requirement("n", "lt", ("10",))]),
        ("app.kubernetes.io/name=x", [Requirement("app.kubernetes.io/name", "in", ("x",))]),
        ("app=", [Requirement("app", "in", ("",))]),
        (
            "a=1, !b ,c",
            [
                Requirement("a", "in", ("1",)),
                Requirement("b", "!exists"),
                Requirement("c", "exists"),
            ],
        ),
        ("", []),
    ],
)
def test_label_selector_grammar(text: str, expected: list[Requirement]) -> None:
    assert parse_label_selector(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "app=web)",
        "app in (a",
        "=web",
        "app=we b",
        "-app=x",
        "n>x",
        "app=" + "x" * 64,
        "app='; DROP TABLE resources; --",
        'a"b=c',
        "UPPER.Case/x=y",
    ],
)
def test_malformed_label_selectors_are_rejected(text: str) -> None:
    with pytest.raises(InvalidQuery, match="label"):
        parse_label_selector(text)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("status.phase", (Key("status"), Key("phase"))),
        (".status.phase", (Key("status"), Key("phase"))),
        ("metadata.annotations['a.io/b']", (Key("metadata"), Key("annotations"), Key("a.io/b"))),
        ('metadata.labels."app"', (Key("metadata"), Key("labels"), Key("app"))),
        ("spec.containers[].image", (Key("spec"), Key("containers"), Index(None), Key("image"))),
        ("spec.containers[1].name", (Key("spec"), Key("containers"), Index(1), Key("name"))),
        ("status['phase']", (Key("status"), Key("phase"))),
    ],
)
def test_field_paths(text: str, segments: tuple[Key | Index, ...]) -> None:
    assert parse_field_path(text) == FieldPath(segments)


@pytest.mark.parametrize(
    "text", ["spec.containers[]", "a..b", "a.", "a[x]", "a['unclosed", "a;b", "a.b c", ""]
)
def test_malformed_field_paths_are_rejected(text: str) -> None:
    with pytest.raises(InvalidQuery):
        parse_field_path(text)


def test_field_selector_operators_and_escapes() -> None:
    assert parse_field_selector(r"status.phase!=Running,spec.nodeName=a\,b,!x.y") == [
        FieldRequirement(FieldPath((Key("status"), Key("phase"))), "notin", ("Running",)),
        FieldRequirement(FieldPath((Key("spec"), Key("nodeName"))), "in", ("a,b",)),
        FieldRequirement(FieldPath((Key("x"), Key("y"))), "!exists"),
    ]
    assert parse_field_selector("spec.containers[].image in (nginx, redis)")[0].values == (
        "nginx",
        "redis",
    )


def test_field_selectors_refuse_numeric_comparisons() -> None:
    with pytest.raises(InvalidQuery):
        parse_field_selector("spec.replicas>3")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01T10:00:00Z", datetime(2024, 3, 1, 10)),
        ("2024-03-01T12:00:00+02:00", datetime(2024, 3, 1, 10)),
        ("2024-03-01T12:00:00 02:00", datetime(2024, 3, 1, 10)),  # '+' decoded as a space
        ("2024-03-01 10:00:00", datetime(2024, 3, 1, 10)),
        ("2024-03-01", datetime(2024, 3, 1)),
        ("1709287200", datetime(2024, 3, 1, 10)),
        ("1709287200000", datetime(2024, 3, 1, 10)),
    ],
)
def test_search_time_formats(text: str, expected: datetime) -> None:
    assert parse_search_time(text, what="since") == expected


@pytest.mark.parametrize("text", ["170928720", "yesterday", "2024-13-01", "2024-03-01T25:00:00Z"])
def test_bad_search_times_are_rejected(text: str) -> None:
    with pytest.raises(InvalidQuery, match="invalid since"):
        parse_search_time(text, what="since")


def test_order_by_accepts_columns_and_field_paths_only() -> None:
    assert parse_order_by(["namespace desc", "created_at", "metadata.labels.app asc"]) == (
        OrderBy("namespace", True),
        OrderBy("created_at", False),
        OrderBy(FieldPath((Key("metadata"), Key("labels"), Key("app"))), False),
    )
    for bad in [
        "uid",
        "name; DROP TABLE resources",
        "JSON_EXTRACT(object,'$.a')",
        "name up",
        "a b c",
    ]:
        with pytest.raises(InvalidQuery):
            parse_order_by([bad])


def test_url_parameters_win_over_search_labels() -> None:
    query = query_from_request(
        {
            "clusters": ["c1,c2"],
            "labelSelector": [
                "search.clusterpedia.io/clusters in (c3),search.clusterpedia.io/names=n1,app=web"
            ],
        }
    )
    assert query.clusters == ("c1", "c2")
    assert query.names == ("n1",)
    assert query.labels == (Requirement("app", "in", ("web",)),)


def test_path_cluster_and_namespace_win_over_everything() -> None:
    query = query_from_request(
        {"clusters": ["a"], "namespaces": ["x"]}, cluster="from-path", namespace="ns"
    )
    assert (query.clusters, query.namespaces) == (("from-path",), ("ns",))


def test_fuzzy_names_and_other_clusterpedia_labels() -> None:
    query = query_from_request(
        {
            "labelSelector": [
                "internalstorage.clusterpedia.io/fuzzy-name in (web,api),other.clusterpedia.io/x=y"
            ]
        }
    )
    assert query.fuzzy_names == ("web", "api")
    assert query.labels == ()


def test_owner_search_needs_exactly_one_cluster() -> None:
    with pytest.raises(InvalidQuery, match="cluster must be specified"):
        query_from_request({"ownerUID": ["u1"]})
    query = query_from_request(
        {"ownerName": ["web"], "ownerGR": ["deployments.apps"], "ownerSeniority": ["1"]},
        cluster="c1",
    )
    assert query.owner == OwnerFilter(name="web", group="apps", resource="deployments", seniority=1)


def test_label_forms_of_orderby_limit_and_offset() -> None:
    query = query_from_request(
        {
            "labelSelector": [
                "search.clusterpedia.io/orderby in (name_desc,cluster),"
                "search.clusterpedia.io/limit=5,search.clusterpedia.io/offset=10"
            ]
        }
    )
    assert query.order_by == (OrderBy("name", True), OrderBy("cluster", False))
    assert (query.limit, query.offset) == (5, 10)


def test_size_is_the_paging_labels_other_name_and_one_of_the_two_may_be_given() -> None:
    query = query_from_request({"labelSelector": ["search.clusterpedia.io/size=7"]})
    assert query.limit == 7
    with pytest.raises(InvalidQuery, match="repeats another label for limit"):
        query_from_request(
            {"labelSelector": ["search.clusterpedia.io/size=7,search.clusterpedia.io/limit=8"]}
        )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"labelSelector": ["search.clusterpedia.io/clusters notin (a)"]}, "only supports"),
        ({"labelSelector": ["search.clusterpedia.io/unknown=a"]}, "unknown search label"),
        ({"limit": ["ten"]}, "invalid limit"),
        ({"limit": ["-1"]}, "invalid limit"),
        ({"withRemainingCount": ["yes please"]}, "withRemainingCount"),
        ({"since": ["2024-03-02"], "before": ["2024-03-01"]}, "before"),
        ({"orderby": ["name desc extra"]}, "orderby"),
        ({"whereSQLParam": ["1"]}, "whereSQLStatement"),
        ({"whereSQL": ["1=1"]}, "raw whereSQL"),
        ({"whereSQLStatement": ["name = ?"], "whereSQLJSONParams": ["%%%"]}, "base64"),
        ({"clusters": [",".join(["c"] * 501)]}, "too many"),
    ],
)
def test_bad_parameters_raise_one_error_type(params: dict[str, list[str]], message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        query_from_request(params)


@pytest.mark.parametrize(
    "params",
    [
        {"labelSelector": ["search.clusterpedia.io/forward=x"]},
        {"labelSelector": ["app=web,search.clusterpedia.io/forward"]},
        {"forward": ["true"]},
    ],
)
def test_a_forward_that_reached_the_storage_is_refused(params: dict[str, list[str]]) -> None:
    """The reach-through layer sends forwards to the member; one that got to the storage
    named no member."""
    with pytest.raises(InvalidQuery, match="needs the member"):
        query_from_request(params)


def test_forward_requested_by_parameter_label_or_header() -> None:
    assert forward_requested({"forward": ["true"]})
    assert not forward_requested({"forward": ["false"]})
    assert forward_requested({"labelSelector": ["search.clusterpedia.io/forward"]})
    assert forward_requested({"labelSelector": ["a=b,search.clusterpedia.io/forward=false"]})
    assert not forward_requested({"labelSelector": ["a=b"]})
    with pytest.raises(InvalidQuery, match="invalid forward"):
        forward_requested({"forward": ["please"]})


def test_what_a_forwarded_request_sends_the_member() -> None:
    sent = forwarded_query(
        {
            "labelSelector": ["app in (web,db),search.clusterpedia.io/forward,!tier,x!=y,n>3"],
            "forward": ["true"],
            "limit": ["500"],
            "fieldSelector": ["status.phase=Running"],
        }
    )
    assert sent == [
        ("labelSelector", "app in (web,db),!tier,x notin (y),n>3"),
        ("limit", "500"),
        ("fieldSelector", "status.phase=Running"),
    ]
    assert forwarded_query({"labelSelector": ["search.clusterpedia.io/forward=1"]}) == []


@pytest.mark.parametrize(
    "params",
    [
        {"orderby": ["name"]},
        {"clusters": ["a"]},
        {"whereSQLStatement": ["name = ?"]},
        {"labelSelector": ["search.clusterpedia.io/orderby=name"]},
        {"labelSelector": ["internalstorage.clusterpedia.io/fuzzy-name=web"]},
    ],
)
def test_search_parameters_are_not_sent_to_a_member(params: dict[str, list[str]]) -> None:
    with pytest.raises(InvalidQuery, match="answered from storage only"):
        forwarded_query(params)


def test_inject_events_by_parameter_or_label() -> None:
    assert query_from_request({"injectEvents": ["false"]}) == query_from_request({})
    assert query_from_request({"injectEvents": ["true"]}).inject_events
    label = {"labelSelector": ["search.clusterpedia.io/inject-events=true"]}
    assert query_from_request(label).inject_events
    with pytest.raises(InvalidQuery, match="invalid injectEvents"):
        query_from_request({"injectEvents": ["please"]})


def test_the_forward_header_is_the_forward_parameter() -> None:
    from aiohttp.test_utils import make_mocked_request

    from clusterpedia.apiserver.requestinfo import search_values

    request = make_mocked_request(
        "GET", "/apis/clusterpedia.io/v1beta1/resources/api/v1/pods?limit=5",
        headers={"X-Clusterpedia-Forward": "true"},
    )  # fmt: skip
    assert search_values(request) == {"limit": ["5"], "forward": ["true"]}
    assert forward_requested(search_values(request))
