"""Watch pieces that need no database: stamping resourceVersions into stored bytes, the
per-event filters, the watch parameters and the event encodings."""

from __future__ import annotations

import orjson
import pytest

from clusterpedia.apiserver.negotiation import Form
from clusterpedia.apiserver.status import StatusError
from clusterpedia.apiserver.tables import TableBuilder
from clusterpedia.apiserver.watch import EventEncoder, WatchSettings, parse_watch_request
from clusterpedia.search.params import query_from_request
from clusterpedia.storage.catalog import SyncedType
from clusterpedia.storage.changelog import ChangeEvent
from clusterpedia.storage.errors import InvalidQuery
from clusterpedia.storage.query import Query, TypeFilter
from clusterpedia.storage.records import encode_object, stamp_resource_version
from clusterpedia.sync.objects import MEMBER_RV_ANNOTATION, prepare
from clusterpedia.testing.objects import PODS, make_object
from clusterpedia.watch.matcher import event_matcher

POD_TYPE = SyncedType("c1", "", "v1", "pods", "Pod", True, "pod", ("po",))


def test_stamping_replaces_only_the_metadata_resource_version() -> None:
    # A field named resourceVersion elsewhere (an Event's involvedObject) is left alone.
    obj = {
        "involvedObject": {"resourceVersion": "77"},
        "metadata": {"name": "e", "resourceVersion": "12"},
        "kind": "Event",
        "apiVersion": "v1",
    }
    data = encode_object(obj)
    assert data.startswith(b'{"apiVersion":"v1","kind":"Event","metadata":{"resourceVersion":""')
    once = stamp_resource_version(data, 5)
    twice = stamp_resource_version(once, 123456)
    parsed = orjson.loads(twice)
    assert parsed["metadata"]["resourceVersion"] == "123456"
    assert parsed["involvedObject"]["resourceVersion"] == "77"
    with pytest.raises(ValueError, match="encode_object"):
        stamp_resource_version(b'{"metadata":{}}', 1)


def test_prepare_keeps_the_member_resource_version_in_an_annotation() -> None:
    upsert = prepare(make_object(PODS, name="p", rv="42"), cluster="c9", rtype=PODS)
    assert upsert.resource_version == "42"
    metadata = orjson.loads(upsert.object)["metadata"]
    assert metadata["annotations"][MEMBER_RV_ANNOTATION] == "42"
    assert metadata["resourceVersion"] == ""  # stamped by the writer


def _event(cluster: str = "c1", *, name: str = "p", labels: dict[str, str] | None = None,
           **fields: object) -> ChangeEvent:  # fmt: skip
    obj = make_object(PODS, name=name, cluster=cluster, labels=labels, spec=dict(fields) or None)
    return ChangeEvent(
        7, "ADDED", "", "v1", "pods", cluster, "default", name,
        orjson.dumps(labels).decode() if labels else None, encode_object(obj),
    )  # fmt: skip


def _matches(params: dict[str, str], event: ChangeEvent, **scope: str) -> bool:
    query = query_from_request(
        {k: [v] for k, v in params.items()}, types=(TypeFilter("", "v1", "pods"),), **scope
    )
    return event_matcher(query)(event)


@pytest.mark.parametrize(
    ("params", "scope", "expected"),
    [
        ({}, {}, True),
        ({}, {"cluster": "c2"}, False),
        ({"clusters": "c2,c1"}, {}, True),
        ({"namespaces": "kube-system"}, {}, False),
        ({"names": "p,q"}, {}, True),
        ({"labelSelector": "app=web"}, {}, True),
        ({"labelSelector": "app!=web"}, {}, False),
        ({"labelSelector": "app in (db,web),!gone"}, {}, True),
        ({"labelSelector": "tier"}, {}, False),
        ({"labelSelector": "n>3"}, {}, True),
        ({"labelSelector": "n<3"}, {}, False),
        ({"labelSelector": "search.clusterpedia.io/clusters=c1"}, {}, True),
        ({"labelSelector": "internalstorage.clusterpedia.io/fuzzy-name=p"}, {}, True),
        ({"fieldSelector": "spec.nodeName=node-1"}, {}, True),
        ({"fieldSelector": "spec.nodeName!=node-1"}, {}, False),
        ({"fieldSelector": "spec.containers[].image=nginx"}, {}, True),
        ({"fieldSelector": "spec.containers[].image!=nginx"}, {}, False),
        ({"fieldSelector": "spec.hostNetwork=true"}, {}, True),
        ({"fieldSelector": "spec.priority=5"}, {}, True),
        ({"fieldSelector": "metadata.name=p"}, {}, True),
        ({"since": "2024-01-01"}, {}, True),
        ({"before": "2024-01-01"}, {}, False),
    ],
)
def test_event_filters_mean_what_list_filters_mean(
    params: dict[str, str], scope: dict[str, str], expected: bool
) -> None:
    event = _event(
        labels={"app": "web", "n": "5"},
        nodeName="node-1",
        hostNetwork=True,
        priority=5,
        containers=[{"name": "a", "image": "nginx"}, {"name": "b", "image": "envoy"}],
    )
    assert _matches(params, event, **scope) is expected


@pytest.mark.parametrize(
    "params",
    [{"ownerUID": "u", "clusters": "c1"}, {"whereSQLStatement": "1=1"}],
)
def test_filters_a_watch_cannot_judge_per_event_are_refused(params: dict[str, str]) -> None:
    query = query_from_request(
        {k: [v] for k, v in params.items()}, types=(TypeFilter("", "v1", "pods"),)
    )
    with pytest.raises(InvalidQuery, match="not supported with watch"):
        event_matcher(query)


def _excluding(name: str) -> object:
    """A value of Query field ``name`` that the test event does not pass (for the filters),
    or any value other than the default (for paging and shape)."""
    from datetime import datetime

    from clusterpedia.search.selectors import parse_field_selector, parse_label_selector
    from clusterpedia.storage.condition import Constant
    from clusterpedia.storage.query import OrderBy, OwnerFilter, WhereSQL

    return {
        "types": (TypeFilter("apps", "v1", "deployments"),),
        "clusters": ("other",),
        "namespaces": ("other",),
        "names": ("other",),
        "fuzzy_names": ("zzz",),
        "since": datetime(2999, 1, 1),  # naive UTC, as the parsers give them
        "before": datetime(1999, 1, 1),
        "labels": tuple(parse_label_selector("app=nope")),
        "fields": tuple(parse_field_selector("spec.nodeName=nope")),
        "owner": OwnerFilter(uid="u"),
        "where_sql": WhereSQL("1=1", Constant(True)),  # type: ignore[arg-type]
        "order_by": (OrderBy("name", True),),
        "limit": 5,
        "continue_token": "t",
        "offset": 5,
        "with_remaining_count": True,
        "metadata_only": True,
        "inject_events": True,
    }[name]


def test_the_matcher_evaluates_or_refuses_every_query_field() -> None:
    """A filter the matcher ignored would make a watch return more than the list: every field
    of Query is evaluated (an event outside it no longer matches), is about paging or shape
    (the event still matches), or is refused by name. A new field must be put in one of them;
    until it is, a watch that sets it is refused."""
    from dataclasses import fields, replace

    from clusterpedia.watch.matcher import EVALUATED, NOT_FILTERS, REFUSED

    names = {field.name for field in fields(Query)}
    assert names == EVALUATED | NOT_FILTERS | set(REFUSED), "classify the new Query fields"
    event = _event(labels={"app": "web"}, nodeName="node-1")
    base = Query(types=(TypeFilter("", "v1", "pods"),))
    assert event_matcher(base)(event)
    for name in sorted(names):
        query = replace(base, **{name: _excluding(name)})
        if name in REFUSED:
            with pytest.raises(InvalidQuery, match="not supported with watch"):
                event_matcher(query)
        else:
            assert event_matcher(query)(event) is (name in NOT_FILTERS), name


def test_an_unknown_filter_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from clusterpedia.watch import matcher

    monkeypatch.setattr(matcher, "EVALUATED", matcher.EVALUATED - {"fuzzy_names"})
    with pytest.raises(InvalidQuery, match="the filter fuzzy_names is not supported with watch"):
        event_matcher(Query(fuzzy_names=("p",)))


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"sendInitialEvents": "true"}, 422),
        ({"resourceVersionMatch": "NotOlderThan"}, 422),
        ({"resourceVersion": "x"}, None),
        ({"timeoutSeconds": "-3"}, None),
    ],
)
def test_bad_watch_parameters(params: dict[str, str], error: int | None) -> None:
    if error is None:
        with pytest.raises(InvalidQuery):
            parse_watch_request(params, WatchSettings())
    else:
        with pytest.raises(StatusError) as raised:
            parse_watch_request(params, WatchSettings())
        assert raised.value.code == error


def test_watch_parameters() -> None:
    settings = WatchSettings(default_timeout=(100, 200))
    assert parse_watch_request({}, settings).after is None
    assert parse_watch_request({"resourceVersion": "0"}, settings).after is None
    request = parse_watch_request(
        {"resourceVersion": "15", "timeoutSeconds": "9", "allowWatchBookmarks": "true",
         "sendInitialEvents": "false"},
        settings,
    )  # fmt: skip
    assert (request.after, request.timeout, request.bookmarks) == (15, 9.0, True)
    assert 100 <= parse_watch_request({}, settings).timeout <= 200


def test_table_events_send_column_definitions_once() -> None:
    table = TableBuilder(POD_TYPE, group="", resource="pods", include="Metadata")
    encoder = EventEncoder(POD_TYPE, Form.TABLE, Query(), table)
    first = orjson.loads(encoder.event(_event()))
    second = orjson.loads(encoder.event(_event(name="q")))
    assert first["type"] == "ADDED" and first["object"]["kind"] == "Table"
    assert first["object"]["columnDefinitions"][0]["name"] == "Cluster"
    assert second["object"]["columnDefinitions"] == []
    assert second["object"]["rows"][0]["cells"][:2] == ["c1", "q"]
    bookmark = orjson.loads(encoder.bookmark(99))
    assert bookmark == {
        "type": "BOOKMARK",
        "object": {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "99"},
            "columnDefinitions": [],
            "rows": [],
        },
    }


def test_json_events_splice_the_stored_bytes() -> None:
    event = _event()
    line = EventEncoder(POD_TYPE, Form.JSON, Query(), None).event(event)
    assert line == b'{"type":"ADDED","object":' + event.object + b"}\n"
    partial = orjson.loads(EventEncoder(POD_TYPE, Form.METADATA, Query(), None).event(event))
    assert partial["object"]["kind"] == "PartialObjectMetadata"
    assert partial["object"]["metadata"]["name"] == "p"
    bookmark = orjson.loads(EventEncoder(POD_TYPE, Form.JSON, Query(), None).bookmark(3))
    assert bookmark["object"] == {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "3"},
    }
