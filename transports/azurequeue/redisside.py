"""The transport's side in Redis: its key schema, its clients, and the parts that use them.

Every key of the transport lives under `<redis_key_prefix><queue_name_prefix>` (the namespace):

* `wake:<queue>`, `due:<queue>`: wake-up tokens of an Azure queue (`wakeup`);
* `nudge:<id>`, `nudge:<id>:transient`: a connection's own lists that interrupt its waits;
* `bindings-version`: a counter bumped when the Azure binding table changes (`registry`);
* `bundle:<queue>:<message id>`: the settled parts of a bundle (`bundles.DoneParts`);
* `alive:<queue>`, `q:<queue>`, `bind:<exchange>`: transient queues (`transient`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import redis

from .bundles import DoneParts
from .options import Options
from .redisauth import redis_from_url
from .transient import TransientQueues
from .wakeup import WakeSignals

#: Redis socket timeouts (seconds) for commands, and on top of a blocking wait: short, because
#: a send waits on its wake-up signal and Redis answers in well under a millisecond.
REDIS_TIMEOUT = 1.0


@dataclass(frozen=True)
class RedisKeys:
    """The Redis key schema of one namespace: the only place a key name is spelled."""

    namespace: str

    def wake(self, queue: str) -> str:
        """The list of immediate wake-up tokens of an Azure queue."""
        return f"{self.namespace}wake:{queue}"

    def due(self, queue: str) -> str:
        """The list of due tokens (`@<epoch>`) of an Azure queue."""
        return f"{self.namespace}due:{queue}"

    def nudge(self, owner: str) -> str:
        """The list a connection blocks on so that it can be interrupted."""
        return f"{self.namespace}nudge:{owner}"

    @property
    def bindings_version(self) -> str:
        """The counter of changes to the Azure binding table."""
        return f"{self.namespace}bindings-version"

    def bundle(self, queue: str, message_id: str) -> str:
        """The set of settled part indexes of a bundle."""
        return f"{self.namespace}bundle:{queue}:{message_id}"

    def alive(self, queue: str) -> str:
        """The key whose life is a transient queue's life."""
        return f"{self.namespace}alive:{queue}"

    @property
    def alive_pattern(self) -> str:
        """A SCAN pattern matching every transient queue's `alive` key."""
        return f"{self.namespace}alive:*"

    def queue_of_alive(self, key: str) -> str:
        """The transient queue an `alive` key belongs to."""
        return key[len(self.alive("")):]

    def messages(self, queue: str) -> str:
        """The list holding a transient queue's messages."""
        return f"{self.namespace}q:{queue}"

    def bindings(self, exchange: str) -> str:
        """The sorted set of live bindings of an exchange to transient queues."""
        return f"{self.namespace}bind:{exchange}"


class RedisSide:
    """One connection's Redis: a client for commands, the key schema, and what uses them."""

    def __init__(self, options: Options) -> None:
        self._options = options
        self.keys = RedisKeys(options.redis_namespace)
        self.client = self._connect(socket_timeout=REDIS_TIMEOUT)
        self.signals = WakeSignals(self.client, self.keys, self.keys.nudge(uuid.uuid4().hex))
        self.done_parts = DoneParts(self.client, self.keys)
        self.transient = TransientQueues(self.client, self.keys, options.transient_max_length)

    def _connect(self, socket_timeout: float) -> redis.Redis:
        return redis_from_url(
            str(self._options.redis_url), self._options.redis_credential, socket_timeout=socket_timeout,
            socket_connect_timeout=REDIS_TIMEOUT, decode_responses=True,
        )

    def blocking_client(self, longest_wait: float) -> redis.Redis:
        """A client of its own for a thread's blocking waits of up to `longest_wait` seconds."""
        return self._connect(socket_timeout=longest_wait + REDIS_TIMEOUT)
