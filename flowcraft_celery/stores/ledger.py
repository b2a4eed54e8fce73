"""A run's outstanding work in Redis: what is pending, what finished, and whether it halted.

Every node message that has been decided but not finished is a *pending* entry (its token
`node@iteration` -> the message payload), so completion is "nothing pending" and the
reconciler can re-publish exactly what is outstanding after a crash. Each change is one
atomic script call, idempotent under redelivery: a token that finished is never pending again.

Redis is coordination that can be lost (docs/guarantees.md). Each run has a *marker* holding
its generation (the status document in Cosmos records the same number): `check` reports it,
so a worker that finds no marker knows Redis lost the run's state and has it rebuilt from
Cosmos (`distributed/runs/recovery.py`) before trusting anything here. Keys never expire while the
run lives; `expire_run` gives them the retention once the run is final (`expires` then exists,
and a late write keeps that expiry instead of starting a new one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis

from flowcraft_celery.stores.timeline import RECORD, Write

_EXPECT = """
for i = 1, #ARGV, 2 do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then
    redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""

#: `settle`: ARGV[4] the owner of lock KEYS[9] to release ('' for none), ARGV[5] the number n of
#: `timeline.RECORD` arguments that follow (the attempt's end, on KEYS[10..13]; 0 for none), then
#: the successors' triples from ARGV[6 + n]. With nothing left pending, it also answers the run's
#: halt reason (KEYS[7]) and parent (KEYS[8]; false when the start did not record one).
_RESTAMP = "local function record(KEYS, ARGV)\n" + RECORD + "end\n" + """
local pending, finished, times = KEYS[1], KEYS[2], KEYS[3]
if ARGV[4] ~= '' and redis.call('GET', KEYS[9]) == ARGV[4] then
  redis.call('DEL', KEYS[9])
end
local traced = tonumber(ARGV[5])
if traced > 0 then
  local args = {}
  for i = 6, 5 + traced do args[#args + 1] = ARGV[i] end
  record({KEYS[10], KEYS[11], KEYS[12], KEYS[13]}, args)
end
if ARGV[1] ~= '' then
  redis.call('HDEL', pending, ARGV[1])
  redis.call('HDEL', KEYS[5], ARGV[1])
  if redis.call('SADD', finished, ARGV[1]) == 1 then
    redis.call('HSET', times, ARGV[1], ARGV[2])
  end
end
for i = 6 + traced, #ARGV, 3 do
  if redis.call('HGET', pending, ARGV[i]) == ARGV[i + 1] then
    redis.call('HSET', pending, ARGV[i], ARGV[i + 2])
  end
end
local left = redis.call('TTL', KEYS[4])
if left > 0 then
  redis.call('EXPIRE', pending, left)
  redis.call('EXPIRE', finished, left)
  redis.call('EXPIRE', times, left)
end
local touch = 0
if ARGV[3] ~= '0' and redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[3]) then
  touch = 1
end
local remaining = redis.call('HLEN', pending)
if remaining > 0 then
  return {remaining, touch}
end
return {remaining, touch, redis.call('GET', KEYS[7]) or '', redis.call('GET', KEYS[8])}
"""

_CHECK = """
return {redis.call('SISMEMBER', KEYS[1], ARGV[1]), redis.call('GET', KEYS[2]) or '',
        redis.call('SISMEMBER', KEYS[3], ARGV[1]), redis.call('GET', KEYS[4]) or '',
        redis.call('HGET', KEYS[5], ARGV[1]) or ''}
"""

#: `check` and, unless finished, halted or lost, count an attempt and mark the token recording;
#: with a 7th key, first take that lock for ARGV[2] for ARGV[3] ms (as stores/redis.py's acquire)
#: and do nothing else when another holds it (the 7th reply element says whether it is held);
#: with ARGV[5] and ARGV[6] (a blueprint and version, '' for none), the attempt is counted only
#: when the token's pending entry names them; with ARGV[4], the crash limit, an attempt that will
#: run (counted, no output maybe recorded, under the limit) is also begun in the timeline:
#: `timeline.RECORD` on KEYS[8..11] with ARGV[7..] (the 8th reply element says whether it was).
_ENTER = "local function record(KEYS, ARGV)\n" + RECORD + "end\n" + """
if #KEYS > 6 then
  local holder = redis.call('GET', KEYS[7])
  if not holder then
    redis.call('SET', KEYS[7], ARGV[2], 'PX', ARGV[3])
  elseif holder == ARGV[2] then
    redis.call('PEXPIRE', KEYS[7], ARGV[3])
  else
    return {0, '', 0, '', '', 0, 0, 0}
  end
end
local finished = redis.call('SISMEMBER', KEYS[1], ARGV[1])
local halted = redis.call('GET', KEYS[2]) or ''
local recording = redis.call('SISMEMBER', KEYS[3], ARGV[1])
local generation = redis.call('GET', KEYS[4]) or ''
local entry = redis.call('HGET', KEYS[5], ARGV[1]) or ''
local due = 1
if (ARGV[5] or '') ~= '' then
  due = 0
  if entry ~= '' then
    local pending = cjson.decode(entry)
    local version = pending['ver']
    if version == nil or version == cjson.null then version = '' end
    if pending['bp'] == ARGV[5] and version == ARGV[6] then due = 1 end
  end
end
local attempts = 0
if finished == 0 and halted == '' and generation ~= '' and due == 1 then
  attempts = redis.call('HINCRBY', KEYS[6], ARGV[1], 1)
  redis.call('SADD', KEYS[3], ARGV[1])
end
local traced = 0
if attempts > 0 and recording == 0 and (ARGV[4] or '') ~= '' and attempts - 1 < tonumber(ARGV[4]) then
  local args = {}
  for i = 7, #ARGV do args[#args + 1] = ARGV[i] end
  record({KEYS[8], KEYS[9], KEYS[10], KEYS[11]}, args)
  traced = 1
end
return {finished, halted, recording, generation, entry, attempts, 1, traced}
"""

_EXPIRE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[1])
for i = 2, #KEYS do
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return 1
"""

#: A run's tokens (finished, then pending, flattened) and its dynamic additions, in one command.
_KNOWN = """
return {redis.call('SMEMBERS', KEYS[1]), redis.call('HKEYS', KEYS[2]), redis.call('HVALS', KEYS[3])}
"""

_REFRESH = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 and redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""

#: `begin`: ARGV[1] the generation (the marker, KEYS[2], set last), ARGV[2] the ms during which
#: no one is told to touch the run (KEYS[3]), ARGV[3] its parent run ('' for none, KEYS[4]), then
#: the pending entries' pairs.
_BEGIN = """
redis.call('DEL', unpack(KEYS))
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if ARGV[2] ~= '0' then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
end
redis.call('SET', KEYS[4], ARGV[3])
redis.call('SET', KEYS[2], ARGV[1])
return 1
"""

#: The names of a run's keys, `<prefix>run:<run id>:<name>` (`timeline` is stores/timeline.py's).
#: `expires` exists once the run has ended: its TTL is what is left of the run's retention, and a
#: late write (progress recorded by the caller of an inlined node that ended the run, an attempt's
#: end in the timeline) keeps that expiry instead of starting a new one.
RUN_KEY_NAMES = ("pending", "finished", "times", "recording", "halt", "dynamic", "awaiting", "gen", "crashes",
                 "timeline", "expires", "touched", "parent")


def _milliseconds(seconds: float) -> int:
    """Whole milliseconds of a positive interval, at least 1; 0 for none."""
    return max(1, int(seconds * 1000)) if seconds > 0 else 0


class Entered(NamedTuple):
    """What `RunLedger.enter` found and did."""

    state: TokenState
    #: Attempts of the token started and never ended, this one included (0: none counted).
    attempts: int
    #: Whether the lock `enter` was asked to take is held (True when it was asked for none);
    #: when False nothing else was read or done.
    held: bool = True
    #: Whether `enter` also began the attempt in the timeline (the `begin` it was given).
    begun: bool = False


class Settled(NamedTuple):
    """What `RunLedger.settle` left: work still pending, and whether this caller should refresh
    the run's `lastUpdated` (the first to settle once `touch_every` has passed since the last).
    With nothing pending, also the run's halt reason and its parent run as its start recorded."""

    remaining: int
    touch: bool
    #: Why the run halted ('' while it runs); read only when nothing is pending.
    halted: str = ""
    #: The run's parent run, '' for a top-level run; None when not read (work is pending) or
    #: not recorded (a run begun before this was kept, or whose Redis state was lost).
    parent: str | None = None


class Lock(NamedTuple):
    """A lock (stores/redis.py's layout: its key holds the owner, with a TTL) that `enter` takes
    and `settle` releases in the same script, on the ledger's Redis."""

    key: str
    owner: str
    ttl: float


def token(node_id: str, iteration: int) -> str:
    """The ledger token of one node execution."""
    return f"{node_id}@{iteration}"


@dataclass(frozen=True)
class TokenState:
    """What the ledger says about one node execution of a run."""

    finished: bool
    halted: str
    maybe_recorded: bool
    generation: int | None
    #: The token's pending entry (the message the run expects for it), None when not pending.
    pending: dict[str, Any] | None = None

    @property
    def lost(self) -> bool:
        """Redis has no marker for the run: its state was lost (or the run never existed)."""
        return self.generation is None


@dataclass(frozen=True)
class RebuiltState:
    """A run's ledger as rebuilt from what Cosmos records (see `RunLedger.rebuild`)."""

    generation: int
    finished: Iterable[str]
    recorded: Iterable[str]
    pending: Mapping[str, Mapping[str, Any]]
    awaiting: Iterable[str]
    dynamic: Mapping[str, Mapping[str, Any]]
    #: The run's parent run ('' for a top-level run).
    parent: str = ""


class RunLedger:
    """Pending/finished bookkeeping, halt flags, markers and dynamic nodes of runs, in Redis."""

    def __init__(self, client: redis.Redis, prefix: str = "flowcraft:") -> None:
        self._redis = client
        self._prefix = prefix
        #: The Redis client (a lock on the same server can be taken in the ledger's scripts).
        self.client = client
        self._check = client.register_script(_CHECK)
        self._enter = client.register_script(_ENTER)
        self._expire = client.register_script(_EXPIRE)
        self._begin = client.register_script(_BEGIN)
        self._refresh = client.register_script(_REFRESH)
        self._restamp = client.register_script(_RESTAMP)
        self._expect = client.register_script(_EXPECT)
        self._known = client.register_script(_KNOWN)

    def _key(self, run_id: str, name: str) -> str:
        return f"{self._prefix}run:{run_id}:{name}"

    def keys(self, run_id: str) -> list[str]:
        """Every key of the run."""
        return [self._key(run_id, name) for name in RUN_KEY_NAMES]

    def begin(self, run_id: str, generation: int, pending: Mapping[str, Mapping[str, Any]],
              touched_for: float = 0.0, parent: str = "") -> None:
        """A new run: whatever Redis held under its id cleared, its start messages pending, its
        parent run recorded ('' for a top-level run) and its marker set, in one step; with
        `touched_for`, `settle` tells no one to refresh the run's `lastUpdated` for that many
        seconds (the run was just created)."""
        args: list[Any] = [generation, _milliseconds(touched_for), parent]
        for name, payload in pending.items():
            args += [name, _dump(payload)]
        keys = [self._key(run_id, "pending"), self._key(run_id, "gen"), self._key(run_id, "touched"),
                self._key(run_id, "parent")]
        keys += [k for k in self.keys(run_id) if k not in keys]
        self._begin(keys=keys, args=args)

    def expect(self, run_id: str, added: Mapping[str, Mapping[str, Any]]) -> None:
        """Make `added` (token -> payload) pending before their messages are sent, unless a token
        finished or is pending already (a copy of this work that ran before keeps its entries)."""
        args: list[Any] = []
        for name, payload in added.items():
            args += [name, _dump(payload)]
        self._expect(keys=[self._key(run_id, "pending"), self._key(run_id, "finished")], args=args)

    def settle(self, run_id: str, done: str, sent: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]],
               finished_at: float | None = None, touch_every: float = 0.0, release: Lock | None = None,
               end: Write | None = None) -> Settled:
        """Mark `done` finished ('' for none; its attempt ended, as `end_attempt` notes) and replace
        each of its successors' pending entries (token -> (entry written before its message left,
        the entry with its final `sent`)) only while it still holds what was written: a successor
        that moved on meanwhile (its sleep's wake-up, its retry, its own finish) keeps its own.
        Return how many remain pending, and (with `touch_every`) whether the caller is the first
        to settle for the run since `touch_every` seconds: it then refreshes the run's `lastUpdated`,
        so the run is touched once per interval whichever process moves it on. With `release`, that
        lock is released first if its owner still holds it, and with `end` (`Attempt.ending`) the
        attempt's end is written to the timeline: one command for all."""
        args: list[Any] = [done, repr(time.time() if finished_at is None else finished_at),
                           _milliseconds(touch_every), release.owner if release is not None else "",
                           len(end.args) if end is not None else 0, *(end.args if end is not None else ())]
        for name, (before, after) in sent.items():
            args += [name, _dump(before), _dump(after)]
        keys = [self._key(run_id, "pending"), self._key(run_id, "finished"), self._key(run_id, "times"),
                self._key(run_id, "expires"), self._key(run_id, "crashes"), self._key(run_id, "touched"),
                self._key(run_id, "halt"), self._key(run_id, "parent")]
        if release is not None or end is not None:
            keys.append(release.key if release is not None else keys[0])  # not read without an owner
        if end is not None:
            keys += end.keys
        answer = self._restamp(keys=keys, args=args)
        if len(answer) < 4:
            return Settled(int(answer[0]), bool(answer[1]))
        parent = answer[3]
        return Settled(int(answer[0]), bool(answer[1]), _text(answer[2]), None if parent is None else _text(parent))

    def check(self, run_id: str, node_token: str) -> TokenState:
        """Whether the token finished, the run's halt reason ('' if running), whether an output
        may already be recorded for the token (see `mark_recording`), the run's generation and
        the token's pending entry, in one round trip."""
        keys = [self._key(run_id, "finished"), self._key(run_id, "halt"), self._key(run_id, "recording"),
                self._key(run_id, "gen"), self._key(run_id, "pending")]
        finished, halted, recording, generation, entry = self._check(keys=keys, args=[node_token])
        marker = _text(generation)
        return TokenState(bool(finished), _text(halted), bool(recording), int(marker) if marker else None,
                          json.loads(entry) if entry else None)

    def enter(self, run_id: str, node_token: str, lock: Lock | None = None, begin: Write | None = None,
              crash_limit: int = 0, expect: tuple[str, str | None] | None = None) -> Entered:
        """`check`, and unless the token finished, the run halted or its state is lost, also
        `begin_attempt` and `mark_recording` (an attempt that starts now may record an output),
        in one round trip. `settle` of the token ends the attempt as `end_attempt` does. With
        `lock`, take it first in the same script (or extend it if its owner holds it already);
        when another holds it nothing else happens and `held` is False. With `lock` and `begin` (a
        timeline write, `RunTimeline.beginning`), an attempt that will run now (counted, no output
        maybe recorded, fewer than `crash_limit` earlier attempts unended) is begun in the timeline
        in the same script too (`begun`). With `lock` and `expect` (the blueprint and version a
        message names), nothing is counted unless the token is pending as such a message."""
        keys = [self._key(run_id, "finished"), self._key(run_id, "halt"), self._key(run_id, "recording"),
                self._key(run_id, "gen"), self._key(run_id, "pending"), self._key(run_id, "crashes")]
        args: list[Any] = [node_token]
        if lock is not None:
            keys.append(lock.key)
            args += [lock.owner, _milliseconds(lock.ttl)]
            blueprint, version = expect if expect is not None else ("", None)
            args += [crash_limit if begin is not None else "", blueprint, version or ""]
            if begin is not None:
                keys += begin.keys
                args += begin.args
        finished, halted, recording, generation, entry, attempts, held, begun = self._enter(keys=keys, args=args)
        marker = _text(generation)
        state = TokenState(bool(finished), _text(halted), bool(recording), int(marker) if marker else None,
                           json.loads(entry) if entry else None)
        return Entered(state, int(attempts), bool(held), bool(begun))

    def generation(self, run_id: str) -> int | None:
        """The run's marker: its generation, or None when Redis holds no state for the run."""
        value = self._redis.get(self._key(run_id, "gen"))
        return int(_text(value)) if value else None

    def mark_recording(self, run_id: str, node_token: str) -> None:
        """Note, before writing an output, that one may exist: a redelivery then looks it up
        instead of running the node again (and a first delivery skips that lookup)."""
        self._redis.sadd(self._key(run_id, "recording"), node_token)

    def halt(self, run_id: str, reason: str) -> None:
        """Stop the run: workers drop its messages from now on."""
        self._redis.set(self._key(run_id, "halt"), reason)

    def rebuild(self, run_id: str, state: RebuiltState) -> None:
        """Replace the run's ledger with `state` in one transaction; the marker is set last."""
        pipe = self._redis.pipeline(transaction=True)
        names = ("pending", "finished", "recording", "awaiting", "dynamic", "gen")
        pipe.delete(*(self._key(run_id, n) for n in names))
        pipe.set(self._key(run_id, "parent"), state.parent)
        if state.finished:
            pipe.sadd(self._key(run_id, "finished"), *state.finished)
        if state.recorded:
            pipe.sadd(self._key(run_id, "recording"), *state.recorded)
        if state.pending:
            pipe.hset(self._key(run_id, "pending"), mapping={t: _dump(p) for t, p in state.pending.items()})
        if state.awaiting:
            pipe.sadd(self._key(run_id, "awaiting"), *state.awaiting)
        if state.dynamic:
            pipe.hset(self._key(run_id, "dynamic"), mapping={t: _dump(a) for t, a in state.dynamic.items()})
        pipe.set(self._key(run_id, "gen"), state.generation)
        pipe.execute()

    def pending(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Outstanding work: token -> message payload."""
        raw = self._redis.hgetall(self._key(run_id, "pending"))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def update_pending(self, run_id: str, node_token: str, payload: Mapping[str, Any]) -> None:
        """Replace a pending entry's payload (a sleep's wake time, a resume's result)."""
        self._redis.hset(self._key(run_id, "pending"), node_token, _dump(payload))

    def refresh_pending(self, run_id: str, node_token: str, payload: Mapping[str, Any]) -> bool:
        """Replace a pending entry's payload (a re-sent message's `sent`/`due`) only while it is
        still pending: a token that finished meanwhile stays finished. True if replaced."""
        keys = [self._key(run_id, "pending"), self._key(run_id, "finished")]
        return bool(self._refresh(keys=keys, args=[node_token, _dump(payload)]))

    def add_dynamic(self, run_id: str, parent_token: str, addition: Mapping[str, Any]) -> None:
        """Remember nodes a result added, so every worker rebuilds the same graph."""
        self._redis.hset(self._key(run_id, "dynamic"), parent_token, _dump(addition))

    def dynamic(self, run_id: str) -> list[dict[str, Any]]:
        """Every addition of the run, in no particular order."""
        return [json.loads(v) for v in self._redis.hgetall(self._key(run_id, "dynamic")).values()]

    def await_token(self, run_id: str, node_token: str) -> list[str]:
        """Record that `node_token` waits for an external event; return every waiting token."""
        self._redis.sadd(self._key(run_id, "awaiting"), node_token)
        return self.awaiting(run_id)

    def unawait_token(self, run_id: str, node_token: str) -> list[str]:
        """The token's event arrived; return the tokens still waiting."""
        self._redis.srem(self._key(run_id, "awaiting"), node_token)
        return self.awaiting(run_id)

    def awaiting(self, run_id: str) -> list[str]:
        """Tokens of nodes waiting for an external event, sorted."""
        return sorted(_text(t) for t in self._redis.smembers(self._key(run_id, "awaiting")))

    def begin_attempt(self, run_id: str, node_token: str) -> int:
        """Count an attempt of the token that starts now; return how many started and never ended
        (this one included): more than one means earlier attempts died with their process."""
        return int(self._redis.hincrby(self._key(run_id, "crashes"), node_token, 1))

    def end_attempt(self, run_id: str, node_token: str) -> None:
        """The attempt ended (success, failure or error), so it did not crash its process."""
        self._redis.hdel(self._key(run_id, "crashes"), node_token)

    def unended_attempts(self, run_id: str) -> dict[str, int]:
        """Per token, the attempts that started and never ended (a running one included)."""
        found = self._redis.hgetall(self._key(run_id, "crashes"))
        return {_text(t): int(n) for t, n in found.items()}

    def finish_times(self, run_id: str) -> list[tuple[str, float]]:
        """When each node execution finished (the worker's clock), in order."""
        raw = self._redis.hgetall(self._key(run_id, "times"))
        return sorted(((_text(k), float(v)) for k, v in raw.items()), key=lambda item: item[1])

    def tokens(self, run_id: str) -> set[str]:
        """Every token of the run the ledger knows: finished and pending."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self._key(run_id, "finished"))
            pipe.hkeys(self._key(run_id, "pending"))
            finished, pending = pipe.execute()
        return {_text(t) for t in (*finished, *pending)}

    def expire_run(self, run_id: str, seconds: int, also: Iterable[str] = ()) -> None:
        """Let every key of the run, and the keys `also` (its joins and claims), expire `seconds`
        from now (one command)."""
        marker = self._key(run_id, "expires")
        keys = [marker, *(key for key in self.keys(run_id) if key != marker), *also]
        self._expire(keys=keys, args=[seconds])

    def tokens_and_dynamic(self, run_id: str) -> tuple[set[str], list[dict[str, Any]]]:
        """`tokens` and `dynamic` in one command."""
        finished, pending, additions = self._known(
            keys=[self._key(run_id, "finished"), self._key(run_id, "pending"), self._key(run_id, "dynamic")])
        return {_text(t) for t in (*finished, *pending)}, [json.loads(v) for v in additions]

    def delete_run(self, run_id: str, dry_run: bool = False) -> int:
        """Delete the run's keys (with `dry_run` only count them); return how many existed."""
        keys = self.keys(run_id)
        return int(self._redis.exists(*keys) if dry_run else self._redis.delete(*keys))

    def finished_count(self, run_id: str) -> int:
        """How many node executions of the run have finished."""
        return int(self._redis.scard(self._key(run_id, "finished")))


def _dump(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
