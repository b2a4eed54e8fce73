"""Node queue shards: one run's messages always share a shard, runs spread over every shard, and
one shard is the plain queue (so the default changes nothing and shard 0 survives any change)."""

from __future__ import annotations

from collections import Counter

from flowcraft_celery.distributed.core.shards import node_queue, shard_names, shard_of


def test_one_shard_is_the_queue_itself() -> None:
    assert shard_names("flowcraft", 1) == ["flowcraft"]
    assert node_queue({"task_default_queue": "flowcraft"}, None, "any-run") == "flowcraft"


def test_a_runs_messages_share_a_shard_and_runs_spread_over_all() -> None:
    conf = {"task_default_queue": "q", "flowcraft_queue_shards": 4}
    assert shard_names("q", 4) == ["q", "q-shard1", "q-shard2", "q-shard3"]
    assert len({node_queue(conf, None, "run-7") for _ in range(10)}) == 1
    spread = Counter(node_queue(conf, None, f"run-{i}") for i in range(4000))
    assert set(spread) == set(shard_names("q", 4))
    assert min(spread.values()) > 800


def test_a_nodes_own_queue_is_not_sharded() -> None:
    conf = {"task_default_queue": "q", "flowcraft_queue_shards": 4}
    assert node_queue(conf, "heavy", "run-7") == "heavy"
    assert shard_of("q", "run-7", 4) in shard_names("q", 4)
