"""Node queue shards: one run's messages always share a shard, runs spread over every shard, and
one shard is the plain queue (so the default changes nothing and shard 0 survives any change)."""

from __future__ import annotations

from collections import Counter

from flowcraft_celery.distributed.core.shards import node_queue, shard_names, shard_of, shards_to_consume


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


def test_a_nodes_own_queue_is_sharded_like_the_default_queue() -> None:
    conf = {"task_default_queue": "q", "flowcraft_queue_shards": 4}
    assert node_queue({"task_default_queue": "q"}, "heavy", "run-7") == "heavy"
    assert node_queue(conf, "heavy", "run-7") == shard_of("heavy", "run-7", 4)
    assert {node_queue(conf, "heavy", f"run-{i}") for i in range(200)} == set(shard_names("heavy", 4))


def test_a_worker_consumes_every_shard_of_each_node_queue_it_names() -> None:
    conf = {"task_default_queue": "q", "flowcraft_queue_shards": 3, "flowcraft_reconcile_queue": "q-reconcile"}
    assert shards_to_consume(["heavy"], conf) == ["heavy-shard1", "heavy-shard2"]
    assert shards_to_consume(["q", "q-shard1", "q-shard2", "q-reconcile"], conf) == []
    assert shards_to_consume(["q-shard2"], conf) == []  # a worker for one shard stays on it
    assert shards_to_consume(["heavy"], {**conf, "flowcraft_queue_shards": 1}) == []
