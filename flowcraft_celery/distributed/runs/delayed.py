"""Which task messages wait hidden in a queue until they are due (countdown, retry, sleep).

Azure Queue Storage keeps a delayed message invisible until its time and tells nobody about
it: the queue's approximate count includes it, a peek does not show it, and no worker holds it
(so `celery inspect scheduled` is empty, where Celery on Redis lists the ETA tasks its workers
hold). So every publish with an ETA from a process with this app records the task in a sorted
set per queue, `<flowcraft_key_prefix>delayed:<queue>` (member `<task id> <task name>`, score
the due time; a retry of the same task moves its entry), and entries drop out once due. That
is one Redis script call per delayed publish; `flowcraft-celery queues` and the metrics read
the counts and lists from it. Delayed messages published by other programs are not seen.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import current_app
from celery.signals import after_task_publish

from flowcraft_celery.settings import Settings
from flowcraft_celery.stores.guard import log_level
from transports.azurequeue import redis_from_url, wire

logger = logging.getLogger("flowcraft.delayed")

_ADD = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(last[2])) + 3600) end
return 1
"""


@dataclass(frozen=True)
class DelayedTask:
    """A task message waiting in a queue until `due`."""

    task_id: str
    task: str
    due: float


class DelayedIndex:
    """The sorted sets of delayed task messages of one key prefix."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._add = client.register_script(_ADD)

    def key(self, queue: str) -> str:
        """The sorted set of `queue`."""
        return f"{self._prefix}delayed:{queue}"

    def record(self, queue: str, task_id: str, task: str, due: float, now: float | None = None) -> None:
        """Note that `task_id` waits in `queue` until `due` (and forget entries already due)."""
        now = time.time() if now is None else now
        self._add(keys=[self.key(queue)], args=[due, f"{task_id} {task}", now])

    def count(self, queue: str, now: float | None = None) -> int:
        """How many messages of `queue` are not due yet."""
        return int(self._redis.zcount(self.key(queue), f"({time.time() if now is None else now}", "+inf"))

    def tasks(self, queue: str, now: float | None = None, limit: int = 100) -> list[DelayedTask]:
        """The delayed tasks of `queue`, soonest first."""
        rows: list[tuple[bytes, float]] = self._redis.zrangebyscore(  # type: ignore[assignment]
            self.key(queue), f"({time.time() if now is None else now}", "+inf", start=0, num=limit, withscores=True)
        found = []
        for member, due in rows:
            text = member.decode() if isinstance(member, bytes) else str(member)
            task_id, _, task = text.partition(" ")
            found.append(DelayedTask(task_id, task, float(due)))
        return found


_indexes: dict[tuple[int, str, str], DelayedIndex] = {}


def index_for(conf: Any) -> DelayedIndex:
    """The process's index for a Celery configuration (its Redis URL and key prefix)."""
    settings = Settings.from_conf(conf)
    url, prefix = settings.redis_url, settings.key_prefix
    key = (os.getpid(), url, prefix)
    if key not in _indexes:
        _indexes[key] = DelayedIndex(redis_from_url(url), prefix)
    return _indexes[key]


def _on_publish(sender: str | None = None, headers: dict[str, Any] | None = None, routing_key: str | None = None,
                **_: Any) -> None:
    """Record a published task message that has an ETA in the future."""
    headers = headers or {}
    due = wire.eta_time(headers.get("eta"))
    if due is None or due <= time.time() or not routing_key:
        return
    try:
        index_for(current_app.conf).record(routing_key, str(headers.get("id")), str(headers.get("task") or sender), due)
    except redis.RedisError as exc:  # the message is sent; only its listing is missing
        logger.log(log_level(exc, logging.WARNING), "could not record delayed task %s in Redis: %s",
                   headers.get("id"), exc)


def install_delayed_index() -> None:
    """Record every delayed publish of this process (idempotent)."""
    after_task_publish.connect(_on_publish, weak=False, dispatch_uid="flowcraft-delayed-index")
