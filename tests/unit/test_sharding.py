"""The original's explicit sharding, decided per PediaCluster event (the hand-over itself runs
against a real host in tests/integration/test_operator.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clusterpedia.compose import peering_name
from clusterpedia.operator.runtime import OperatorConfig, Runtime
from clusterpedia.operator.shards import claimed, ours
from clusterpedia.settings import OperatorOptions, RunSettings


class Recorder(Runtime):
    def __init__(self, shard: str) -> None:
        super().__init__(OperatorConfig(storage_url="sqlite://", sharding_name=shard))
        self.patches: list[tuple[str, Mapping[str, Any]]] = []

    async def patch_status(self, name: str, status: Mapping[str, Any]) -> None:
        self.patches.append((name, status))


def test_a_shard_owns_the_clusters_that_name_it() -> None:
    default, shard = Recorder(""), Recorder("east")
    assert ours({}, default) and ours({"shardingName": ""}, default)
    assert not ours({"shardingName": "east"}, default)
    assert ours({"shardingName": "east"}, shard) and not ours({}, shard)


async def test_a_cluster_another_shard_holds_is_waited_for_thenclaimed() -> None:
    shard = Recorder("east")
    assert not await claimed(shard, "c", {"shardingName": "west"})  # west releases first
    assert shard.patches == []
    assert await claimed(shard, "c", {})
    assert shard.patches == [("c", {"shardingName": "east"})]
    assert await claimed(shard, "c", {"shardingName": "east"})  # already ours: no patch
    assert len(shard.patches) == 1
    default = Recorder("")
    assert await claimed(default, "c", {}) and default.patches == []


def test_each_shard_peers_on_its_own_object_by_default() -> None:
    def settings(**options: Any) -> RunSettings:
        return RunSettings(operator=OperatorOptions(**options))

    assert peering_name(settings()) == "clusterpedia"
    assert peering_name(settings(sharding_name="east")) == "clusterpedia-east"
    assert peering_name(settings(sharding_name="east", peering_name="mine")) == "mine"
