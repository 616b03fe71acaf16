"""``--feature-gates`` with the original's names: honoured, said, or refused."""

from __future__ import annotations

import pytest

from clusterpedia import cli, compose
from clusterpedia.features import GATES, FeatureGateError, FeatureGates, parse_feature_gates
from clusterpedia.settings import RunSettings
from clusterpedia.storage import StorageTarget


def test_the_originals_manifest_value_is_accepted_and_said() -> None:
    gates = parse_feature_gates("PruneManagedFields=true,PruneLastAppliedConfiguration=true")
    assert gates == FeatureGates()
    assert [note.split(":")[0] for note in gates.notes] == [
        "PruneManagedFields=true",
        "PruneLastAppliedConfiguration=true",
    ]


def test_the_proxy_gate_is_accepted_both_ways_and_says_which_flags_decide() -> None:
    for value in ("true", "false"):
        (note,) = parse_feature_gates(f"AllowProxyRequestToClusters={value}").notes
        assert "--allowed-proxy-subresources" in note


def test_gates_that_are_our_switches_set_them() -> None:
    gates = parse_feature_gates(" AllowParameterizedSQLQuery=true, IgnoreSyncLease=TRUE ")
    assert gates == FeatureGates(allow_where_sql=True, ignore_sync_lease=True)
    assert parse_feature_gates("AllowParameterizedSQLQuery=false") == FeatureGates()
    assert parse_feature_gates("") == FeatureGates()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("AllowRawSQLQuery=true", "never pasted into a query"),
        ("PruneManagedFields=false", "never stored here"),
        ("RemainingItemCount=true", "withRemainingCount=true"),
        ("AllowSyncAllResource=true", "unknown feature gate 'AllowSyncAllResource'"),
        ("IgnoreSyncLease", "Name=true or Name=false"),
        ("IgnoreSyncLease=yes", "Name=true or Name=false"),
    ],
)
def test_what_cannot_be_honoured_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(FeatureGateError, match=message):
        parse_feature_gates(text)


def test_every_gate_of_the_original_is_known() -> None:
    original = {
        "PruneManagedFields", "PruneLastAppliedConfiguration", "AllowSyncAllCustomResources",
        "AllowSyncAllResources", "HealthCheckerWithStandaloneTCP",
        "ForcePaginatedListForResourceSync", "StreamHandlePaginatedListForResourceSync",
        "IgnoreSyncLease", "ClusterAuthenticationFromSecret", "AllowProxyRequestToClusters",
        "NotConvertToMemoryVersion", "AllowRawSQLQuery", "AllowParameterizedSQLQuery",
        "RemainingItemCount", "APIServerTracing",
    }  # fmt: skip
    assert set(GATES) == original
    for name, gate in GATES.items():  # a gate's default is always accepted
        default = name.startswith("Prune")  # the two beta gates are on by default
        assert default in gate.accepted, name


def test_compose_hands_the_switches_to_the_parts() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(
        ["run", "--feature-gates", "AllowParameterizedSQLQuery=true,IgnoreSyncLease=true"]
    )
    settings = RunSettings.from_arguments(args)
    assert compose.server_config(settings, StorageTarget("sqlite://")).allow_where_sql
    operator = compose.operator_config(settings, StorageTarget("sqlite://"))
    assert operator.cluster.ignore_sync_lease


def test_run_refuses_a_bad_gate_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--feature-gates", "AllowRawSQLQuery=true"]) == 2
    assert "--feature-gates: AllowRawSQLQuery=true is not supported" in capsys.readouterr().err
