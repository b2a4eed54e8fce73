"""Node queue shards: one deployment's node messages spread over several Azure queues.

One Azure queue serves about 2,000 messages per second (docs/capacity.md). With
`FLOWCRAFT_QUEUE_SHARDS` = N > 1 the default queue's node messages go to N queues, `<queue>` and
`<queue>-shard1` .. `<queue>-shard<N-1>`, chosen by run id, so one run's messages share a queue
(its bundles, inline hops and packs stay together) and runs spread evenly. Workers consume every
shard by default. Changing N loses nothing: shard 0 keeps the default queue's name, and a message
left on a shard no worker consumes any more looks lost to reconcile, which re-sends it to the run's
current shard after the stall threshold. Named queues (`config.queue`) are not sharded.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any


def shard_names(queue: str, shards: int) -> list[str]:
    """Every shard of `queue`: the queue itself first."""
    return [queue] + [f"{queue}-shard{i}" for i in range(1, max(1, shards))]


def shard_of(queue: str, run_id: str, shards: int) -> str:
    """The shard of `queue` that carries `run_id`'s messages."""
    if shards <= 1:
        return queue
    return shard_names(queue, shards)[zlib.crc32(run_id.encode()) % shards]


def node_queue(conf: Mapping[str, Any], named: str | None, run_id: str) -> str:
    """The queue of one run's node message: the node's own (`config.queue`), else its shard of the
    default queue."""
    if named:
        return named
    return shard_of(str(conf.get("task_default_queue") or "celery"), run_id,
                    int(conf.get("flowcraft_queue_shards") or 1))
