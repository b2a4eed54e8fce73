"""Node queue shards: one deployment's node messages spread over several Azure queues.

One Azure queue serves about 2,000 messages per second (docs/capacity.md). With
`FLOWCRAFT_QUEUE_SHARDS` = N > 1 every node queue (the default queue, and each node's own
`config.queue`) is N queues, `<queue>` and `<queue>-shard1` .. `<queue>-shard<N-1>`; a run's
messages go to the shard chosen by its run id, so one run's messages share a queue (its bundles,
inline hops and packs stay together) and runs spread evenly. A worker consumes every shard of each
node queue it consumes (`-Q heavy` is heavy's N shards). Changing N loses nothing: shard 0 keeps
the queue's name, and a message left on a shard no worker consumes any more looks lost to
reconcile, which re-sends it to the run's current shard after the stall threshold.
With `FLOWCRAFT_STORAGE_ACCOUNTS` the shards spread over several storage accounts as well (the
transport's `accounts` module: shard i lives in account i mod K).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from transports.azurequeue import DEAD_LETTER_SUFFIX, shard_index, shard_queue_name


def shard_names(queue: str, shards: int) -> list[str]:
    """Every shard of `queue`: the queue itself first."""
    return [shard_queue_name(queue, i) for i in range(max(1, shards))]


def shard_of(queue: str, run_id: str, shards: int) -> str:
    """The shard of `queue` that carries `run_id`'s messages."""
    if shards <= 1:
        return queue
    return shard_names(queue, shards)[zlib.crc32(run_id.encode()) % shards]


def shard_count(conf: Mapping[str, Any]) -> int:
    """The deployment's shard count (`FLOWCRAFT_QUEUE_SHARDS`)."""
    return int(conf.get("flowcraft_queue_shards") or 1)


def node_queue(conf: Mapping[str, Any], named: str | None, run_id: str) -> str:
    """The queue of one run's node message: its shard of the node's own queue (`config.queue`),
    else of the default queue."""
    return shard_of(named or str(conf.get("task_default_queue") or "celery"), run_id, shard_count(conf))


def shards_to_consume(consumed: Iterable[str], conf: Mapping[str, Any]) -> list[str]:
    """The shards a worker consuming the queues `consumed` lacks: every shard of each node queue
    it consumes (not of the reconcile queue, nor of a name that is a shard itself)."""
    names = list(consumed)
    reconcile = conf.get("flowcraft_reconcile_queue")
    wanted = [shard for name in names if name != reconcile and not _is_shard(name)
              for shard in shard_names(name, shard_count(conf))]
    return [name for name in dict.fromkeys(wanted) if name not in names]


def _is_shard(queue: str) -> bool:
    """Whether `queue` is itself a shard (1 or more) of another queue, never sharded again."""
    return shard_index(queue) > 0 and not queue.endswith(DEAD_LETTER_SUFFIX)
