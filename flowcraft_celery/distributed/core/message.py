"""The node message: what a node task carries and what the run ledger holds pending, typed.

A node message names one execution of one node of a run and says how it starts. It travels
as a JSON object: a node task's `msg=` keyword argument (or each member of `msgs=`, a packed
group), and the payload of the token's pending entry in the ledger (`stores/ledger.py`). Its
wire keys, defined here and nowhere else:

| key | attribute | type | meaning |
| --- | --- | --- | --- |
| `run` | `run_id` | non-empty text | the run |
| `bp` | `blueprint_id` | non-empty text | the run's blueprint |
| `ver` | `version` | text or null | the blueprint version the run started on |
| `node` | `node_id` | non-empty text | the node to execute |
| `it` | `iteration` | whole number >= 0 | the iteration (loops) |
| `value` | `value` | any JSON | what the node starts with (a sleep's wake-up: its input) |
| `attempt` | `attempt` | whole number >= 1 | the attempt (retries) |
| `dyn` | `dynamic` | true or false | the run's graph has nodes added at run time |
| `sent` | `sent` | number | when the message was (last) sent, seconds since the epoch |
| `due` | `due` | number | when a delayed message comes due |
| `wake` | `wake` | true or false | the wake-up of a sleep node |
| `wakeAt` | `wake_at` | number | when that sleep ends |
| `childRun` | `child_run` | non-empty text | (ledger) the child run a subflow node waits for |
| `webhook` | `webhook` | non-empty text | (ledger) a webhook node's URL |
| `resume` | `resume` | object | an awaiting node resumed: `{action, output}` |
| `child` | `child` | object | a subflow's child run ended: `{runId, status}` |
| `done` | `done` | object | the node finished, recording failed: `{output, action, dynamicNodes, decision}` |
| `writes` | `writes` | whole number >= 0 | tries of recording `done` so far |
| `mismatches` | `mismatches` | whole number >= 0 | re-deliveries after a blueprint version mismatch |
| `prepared` | `prepared` | any JSON | a node's `prep` result, carried to its next attempt |

The first eight keys are always written, the others only when set (a null, false or 0 reads
as unset, except a null `value` or `prepared`, which is that value), in this order. These are
the keys and values the dict-based messages before this module carried (in the order their
writers added them, for all but a few), so messages still queued and ledger entries still stored
from an earlier version read the same (the ledger's compare-and-set only compares an entry with
what the same call wrote). Keys this version does not know are kept and written back unchanged,
so one a later version adds survives a round trip through this one during a rolling upgrade.
`from_wire` is the one check of a message's shape (`MessageError` names the bad field) and
`sent_at` the one place its `sent` time is stamped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.stores.base import MISSING
from flowcraft_celery.stores.ledger import token

Wire = dict[str, Any]


class MessageError(FlowcraftError, ValueError):
    """A node message of the wrong shape; `key` names the wire key at fault (None: the whole)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _whole(least: int) -> Callable[[Any], bool]:
    return lambda value: not isinstance(value, bool) and isinstance(value, int) and value >= least


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _object(value: Any) -> bool:
    return isinstance(value, dict)


def _anything(value: Any) -> bool:
    return True


@dataclass(frozen=True)
class _Key:
    """One wire key: its attribute, the check of a value and what the check wants (for errors)."""

    attribute: str
    check: Callable[[Any], bool]
    wanted: str

    @property
    def null_is_a_value(self) -> bool:
        """Whether a null under this key is a value (any JSON) rather than "unset"."""
        return self.check is _anything


#: Every wire key in the order it is written; the first eight are always written.
_KEYS: dict[str, _Key] = {
    "run": _Key("run_id", _text, "non-empty text"),
    "bp": _Key("blueprint_id", _text, "non-empty text"),
    "ver": _Key("version", lambda v: v is None or isinstance(v, str), "text or null"),
    "node": _Key("node_id", _text, "non-empty text"),
    "it": _Key("iteration", _whole(0), "a whole number >= 0"),
    "value": _Key("value", _anything, "JSON"),
    "attempt": _Key("attempt", _whole(1), "a whole number >= 1"),
    "dyn": _Key("dynamic", _flag, "true or false"),
    "sent": _Key("sent", _number, "a number"),
    "due": _Key("due", _number, "a number"),
    "wake": _Key("wake", _flag, "true or false"),
    "wakeAt": _Key("wake_at", _number, "a number"),
    "childRun": _Key("child_run", _text, "non-empty text"),
    "webhook": _Key("webhook", _text, "non-empty text"),
    "resume": _Key("resume", _object, "an object"),
    "child": _Key("child", _object, "an object"),
    "done": _Key("done", _object, "an object"),
    "writes": _Key("writes", _whole(0), "a whole number >= 0"),
    "mismatches": _Key("mismatches", _whole(0), "a whole number >= 0"),
    "prepared": _Key("prepared", _anything, "JSON"),
}
_REQUIRED = ("run", "bp", "node")
_ALWAYS_WRITTEN = ("run", "bp", "ver", "node", "it", "value", "attempt", "dyn")


@dataclass(frozen=True, kw_only=True)
class NodeMessage:
    """One node execution of a run and how it starts (the wire keys are in the module docstring)."""

    run_id: str
    blueprint_id: str
    version: str | None = None
    node_id: str
    iteration: int = 0
    value: Any = None
    attempt: int = 1
    dynamic: bool = False
    sent: float | None = None
    due: float | None = None
    wake: bool = False
    wake_at: float | None = None
    child_run: str | None = None
    webhook: str | None = None
    resume: dict[str, Any] | None = None
    child: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    writes: int = 0
    mismatches: int = 0
    #: A `prep` result for the next attempt; MISSING when the attempt prepares afresh.
    prepared: Any = MISSING
    #: Wire keys this version does not know, written back as they came.
    unknown: Mapping[str, Any] = field(default_factory=dict)

    @property
    def token(self) -> str:
        """The ledger token of the execution (`node@iteration`)."""
        return token(self.node_id, self.iteration)

    @classmethod
    def from_wire(cls, wire: Any) -> NodeMessage:
        """Read a message off the wire or out of the ledger; MessageError names the bad field."""
        if not isinstance(wire, dict):
            raise MessageError(f"a node payload must be an object, not {type(wire).__name__}")
        values: dict[str, Any] = {}
        for key, spec in _KEYS.items():
            value = wire.get(key)
            if key in _REQUIRED or (key in wire and (value is not None or spec.null_is_a_value)):
                if not spec.check(value):
                    raise MessageError(f"field {key!r} must be {spec.wanted}, got {value!r:.80}", key)
                values[spec.attribute] = value
        values["unknown"] = {k: v for k, v in wire.items() if k not in _KEYS}
        return cls(**values)

    def to_wire(self) -> Wire:
        """The JSON object this message travels and is stored as."""
        wire: Wire = {}
        for key, spec in _KEYS.items():
            value = getattr(self, spec.attribute)
            if key in _ALWAYS_WRITTEN or not _unset(value, _DEFAULTS[spec.attribute]):
                wire[key] = value
        wire.update(self.unknown)
        return wire

    def sent_at(self, when: float, due: float | None = None) -> NodeMessage:
        """This message as sent at `when`, due at `due` when delayed (the one place `sent` is stamped)."""
        return replace(self, sent=when, due=due)

    def but(self, **changes: Any) -> NodeMessage:
        """This message with some attributes changed."""
        return replace(self, **changes)


_DEFAULTS = {f.name: f.default for f in fields(NodeMessage)}


def _unset(value: Any, default: Any) -> bool:
    """Whether an optional attribute holds its default (not written)."""
    if default is MISSING or default is None or isinstance(default, bool):
        return value is default
    return value == default


def node_message(run_id: str, blueprint: Blueprint, node_id: str, iteration: int, value: Any,
                 dynamic: bool = False, **changes: Any) -> NodeMessage:
    """The first message of a node execution (attempt 1) of `blueprint`'s current version."""
    return NodeMessage(run_id=run_id, blueprint_id=blueprint.id, version=blueprint.run_version, node_id=node_id,
                       iteration=iteration, value=value, dynamic=dynamic, **changes)


def task_messages(args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[NodeMessage]:
    """The node messages of a node task's arguments: `msg=` one payload, or `msgs=` a non-empty
    list of them (a packed group). MessageError says why the arguments are not that."""
    if args:
        raise MessageError(f"a node task takes no positional arguments, got {len(args)}")
    unknown = sorted(set(kwargs) - {"msg", "msgs"})
    if unknown:
        raise MessageError(f"unknown node task argument(s) {', '.join(map(repr, unknown))} (expected msg or msgs)")
    if ("msg" in kwargs) == ("msgs" in kwargs):
        raise MessageError("a node task takes exactly one of msg (one payload) or msgs (a list of payloads)")
    if "msg" in kwargs:
        return [NodeMessage.from_wire(kwargs["msg"])]
    members = kwargs["msgs"]
    if not isinstance(members, list) or not members:
        raise MessageError(f"msgs must be a non-empty list of node payloads, got {members!r:.80}", "msgs")
    messages = []
    for index, member in enumerate(members):
        try:
            messages.append(NodeMessage.from_wire(member))
        except MessageError as exc:
            raise MessageError(f"msgs[{index}]: {exc}", exc.key) from exc
    return messages
