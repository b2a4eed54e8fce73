"""The node task and recovery without services: a run of a chain `a -> b` on the memory stores, the run
ledger and timeline on an in-process Redis (fakeredis, with the ledger's Lua scripts), and Celery's publish
replaced by a recorder. Each test drives the task as a worker would, one delivered message at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
from celery import Celery

from flowcraft_celery.distributed.core import runtime
from flowcraft_celery.distributed.core.message import NodeMessage
from flowcraft_celery.distributed.core.runtime import Runtime
from flowcraft_celery.distributed.node.task import register_node_tasks
from flowcraft_celery.distributed.runs.recovery import complete_run
from flowcraft_celery.distributed.runs.starting import start_run
from flowcraft_celery.engine.builtins import BUILTIN_REGISTRY
from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import Registry
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.settings import Settings
from flowcraft_celery.stores.due import DueIndex
from flowcraft_celery.stores.ledger import RunLedger
from flowcraft_celery.stores.memory import MemoryContextStore, MemoryCoordinationStore, MemoryStatusStore
from flowcraft_celery.stores.retention import RunRecords
from flowcraft_celery.stores.timeline import RunTimeline

QUEUE = "unit"
CHAIN = Blueprint.from_dict({"id": "chain", "metadata": {"version": "1"},
                             "nodes": [{"id": "a", "uses": "step"}, {"id": "b", "uses": "step"}],
                             "edges": [{"source": "a", "target": "b"}]})


@dataclass
class Sent:
    """One task message the code under test handed to Celery."""

    task: str
    kwargs: dict[str, Any]
    options: dict[str, Any]

    @property
    def message(self) -> NodeMessage:
        return NodeMessage.from_wire(self.kwargs["msg"])


@dataclass
class World:
    """A worker's view: the app with its node tasks, the runtime, what was published, what ran."""

    app: Celery
    rt: Runtime
    redis: fakeredis.FakeRedis
    sent: list[Sent] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        self.sent.append(Sent(name, dict(kwargs or {}), options))

    def deliver(self, kwargs: dict[str, Any]) -> Any:
        """Run the node task on one delivered message, as a worker would (eagerly, in this process)."""
        return self.app.tasks["flowcraft.node.step"].apply(kwargs=kwargs).get()

    def take(self) -> list[Sent]:
        """The task messages published since the last call."""
        taken, self.sent[:] = list(self.sent), []
        return taken

    def status(self, run_id: str) -> str:
        doc = self.rt.statuses.get(run_id) or {}
        return str(doc.get("status"))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    client = fakeredis.FakeRedis()
    calls: list[str] = []
    registry = Registry()

    @registry.node("step")
    def step(ctx: NodeContext) -> Any:
        calls.append(f"{ctx.run_id}:{ctx.node_id}")
        return (ctx.input or 0) + 1

    contexts, statuses, coordination = MemoryContextStore(), MemoryStatusStore(), MemoryCoordinationStore()
    ledger = RunLedger(client)
    rt = Runtime(contexts=contexts, statuses=statuses, coordination=coordination, ledger=ledger,
                 blueprints={CHAIN.id: CHAIN}, registry=BUILTIN_REGISTRY.merged(registry),
                 timeline=RunTimeline(client), records=RunRecords(contexts, statuses, ledger, coordination),
                 due=DueIndex(client, "flowcraft:", QUEUE), settings=Settings(retention_days=0))
    app = Celery("unit", set_as_current=False)
    app.conf.task_default_queue = QUEUE
    register_node_tasks(app, ["step"])
    built = World(app, rt, client, calls=calls)
    monkeypatch.setattr(app, "send_task", built.send_task)  # the publish seam: nothing leaves the process
    monkeypatch.setattr(runtime, "build_runtime", lambda conf: rt)
    runtime.reset_runtimes()
    yield built
    runtime.reset_runtimes()


def started(world: World) -> tuple[str, Sent]:
    """Start a run of the chain; its one start message, as published."""
    run_id = start_run(world.app, world.rt, CHAIN.id, start_input=1)
    [start] = world.take()
    return run_id, start


def test_a_node_message_runs_its_node_and_publishes_its_successor_once(world: World) -> None:
    run_id, start = started(world)
    assert start.task == "flowcraft.node.step" and start.message.node_id == "a"
    world.deliver(start.kwargs)
    assert world.calls == [f"{run_id}:a"]
    [successor] = world.take()
    assert (successor.message.node_id, successor.message.value) == ("b", 2)
    assert world.status(run_id) == "running"
    pending = world.rt.ledger.pending(run_id)
    assert list(pending) == ["b@0"]
    assert NodeMessage.from_wire(pending["b@0"]).sent is not None  # reconcile knows when it left
    world.deliver(successor.kwargs)
    assert world.calls == [f"{run_id}:a", f"{run_id}:b"]
    assert world.take() == []
    assert world.status(run_id) == "completed"
    assert world.rt.contexts.get_output(run_id, "b", 0).output == 3  # type: ignore[union-attr]


def test_a_duplicate_message_is_dropped(world: World) -> None:
    run_id, start = started(world)
    world.deliver(start.kwargs)
    [successor] = world.take()
    world.deliver(start.kwargs)  # redelivered after it finished
    assert world.calls == [f"{run_id}:a"]
    assert world.take() == []  # b is not published a second time
    world.deliver(successor.kwargs)
    world.deliver(successor.kwargs)
    assert world.calls == [f"{run_id}:a", f"{run_id}:b"]
    assert world.status(run_id) == "completed"


def test_a_message_the_run_does_not_expect_is_dead_lettered_and_never_runs(world: World) -> None:
    run_id, start = started(world)
    early = start.message.but(node_id="b")  # b is not due before a finished
    world.deliver({"msg": early.to_wire()})
    [letter] = world.take()
    assert world.calls == []
    assert letter.options["queue"] == f"{QUEUE}-dlq"
    assert "b@0 is not due" in letter.options["headers"]["x-dead-letter-reason"]
    assert letter.message == early
    world.deliver(start.kwargs)  # the run goes on
    assert world.calls == [f"{run_id}:a"]


def test_a_task_message_that_is_no_node_message_is_dead_lettered_naming_the_field(world: World) -> None:
    run_id, start = started(world)
    world.deliver({"msg": dict(start.kwargs["msg"], it="zero")})
    [letter] = world.take()
    assert letter.options["queue"] == f"{QUEUE}-dlq"
    assert "field 'it' must be a whole number >= 0" in letter.options["headers"]["x-dead-letter-reason"]
    assert letter.kwargs["msg"]["it"] == "zero"  # the message as it came, for `dlq show`
    assert world.calls == []
    assert world.status(run_id) == "running"


def test_a_run_whose_redis_state_was_lost_is_rebuilt_and_goes_on(world: World) -> None:
    run_id, start = started(world)
    world.deliver(start.kwargs)
    [successor] = world.take()
    world.redis.flushall()  # Redis restarted without persistence: ledger, marker and timeline gone
    world.deliver(successor.kwargs)
    assert world.calls == [f"{run_id}:a", f"{run_id}:b"]  # a ran once: its recorded output counted
    assert world.status(run_id) == "completed"
    assert (world.rt.statuses.get(run_id) or {}).get("generation") == 2


def test_completion_with_lost_pending_work_rebuilds_and_re_sends_it(world: World) -> None:
    run_id, start = started(world)
    world.deliver(start.kwargs)
    world.take()  # b's message is lost with its ledger entry
    world.redis.hdel(f"flowcraft:run:{run_id}:pending", "b@0")
    assert complete_run(world.app, world.rt, run_id) is False  # Cosmos says b is still to run
    [resent] = world.take()
    assert resent.message.token == "b@0" and resent.message.value == 2
    assert list(world.rt.ledger.pending(run_id)) == ["b@0"]
    world.deliver(resent.kwargs)
    assert world.status(run_id) == "completed"
    assert world.calls == [f"{run_id}:a", f"{run_id}:b"]


def reads_of_status(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The run ids whose status document is read from now on (a Cosmos point read each)."""
    reads: list[str] = []
    statuses = world.rt.statuses
    read = statuses.get

    def counted(run_id: str) -> Any:
        reads.append(run_id)
        return read(run_id)

    monkeypatch.setattr(statuses, "get", counted)
    return reads


def test_the_node_ending_a_top_level_run_completes_it_without_reading_its_status_first(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, start = started(world)
    world.deliver(start.kwargs)
    [successor] = world.take()
    reads = reads_of_status(world, monkeypatch)
    world.deliver(successor.kwargs)
    assert world.status(run_id) == "completed"
    assert reads == [run_id]  # the test's own read above, none by the completion
    doc = world.rt.statuses.get(run_id) or {}
    assert doc["result"]["context"]["_outputs.b"] == 3  # type: ignore[index]


def test_a_run_started_before_its_parent_was_recorded_in_redis_reads_its_status_to_complete(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, start = started(world)
    world.deliver(start.kwargs)
    [successor] = world.take()
    world.redis.delete(f"flowcraft:run:{run_id}:parent")  # as a run begun by an earlier version
    reads = reads_of_status(world, monkeypatch)
    world.deliver(successor.kwargs)
    assert world.status(run_id) == "completed"
    assert reads[0] == run_id and len(reads) == 2


def test_a_run_cancelled_while_its_last_node_runs_stays_cancelled(world: World,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from flowcraft_celery.distributed.runs.control import cancel_run

    run_id, start = started(world)
    world.deliver(start.kwargs)
    [successor] = world.take()
    settle = world.rt.ledger.settle

    def cancelled_first(*args: Any, **kwargs: Any) -> Any:  # the cancel lands after b ran, before it settles
        cancel_run(world.rt, run_id)
        return settle(*args, **kwargs)

    monkeypatch.setattr(world.rt.ledger, "settle", cancelled_first)
    world.deliver(successor.kwargs)
    assert world.status(run_id) == "cancelled"
    assert world.rt.ledger.pending(run_id) == {}


def test_flower_shows_which_node_execution_a_task_is_while_the_whole_message_travels(world: World) -> None:
    import ast

    run_id, start = started(world)
    world.deliver(start.kwargs)
    [successor] = world.take()
    assert successor.kwargs["msg"]["value"] == 2  # the whole message, its value included
    assert successor.options["argsrepr"] == "()"
    shown = ast.literal_eval(successor.options["kwargsrepr"])
    assert shown == {"msg": {"run": run_id, "bp": "chain", "ver": "1", "node": "b", "it": 0, "attempt": 1}}
