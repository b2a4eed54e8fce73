"""Log lines written while a node runs carry its run, blueprint, node and iteration."""

from __future__ import annotations

import io
import json
import logging

from flowcraft_celery.distributed.core.logcontext import (
    NodeLogFilter,
    current_node,
    node_log_scope,
    start_task_record,
    task_summary,
)
from flowcraft_celery.distributed.core.message import NodeMessage

FORMAT = "[%(levelname)s]%(flowcraft)s %(message)s"


class JsonFormatter(logging.Formatter):
    """What a JSON log formatter does with a record: its attributes become fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = ("message", "run_id", "blueprint_id", "node_id", "iteration")
        record.message = record.getMessage()
        return json.dumps({f: getattr(record, f, "MISSING") for f in fields})


class FakeExecution:
    """The attributes of a NodeExecution the scope reads."""

    def __init__(self, run_id: str, node_id: str, iteration: int, inline: FakeExecution | None = None) -> None:
        self.run_id, self.node_id, self.iteration = run_id, node_id, iteration
        self.msg = NodeMessage(run_id=run_id, blueprint_id="bp-1", node_id=node_id, iteration=iteration)
        self.inline = inline

    @node_log_scope
    def handle(self) -> None:
        logging.getLogger("user.node.code").warning("working on %s", self.node_id)
        if self.inline is not None:
            self.inline.handle()
        logging.getLogger("user.node.code").warning("done with %s", self.node_id)


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(NodeLogFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    return root, stream, handler


def test_plain_format_shows_the_node_and_nothing_outside_a_node() -> None:
    root, stream, handler = capture(logging.Formatter(FORMAT))
    try:
        logging.getLogger("outside").warning("before")
        FakeExecution("run-1", "charge", 2).handle()
        logging.getLogger("outside").warning("after")
    finally:
        root.removeHandler(handler)
    assert stream.getvalue().splitlines() == [
        "[WARNING] before",
        "[WARNING] [run=run-1 bp=bp-1 node=charge@2] working on charge",
        "[WARNING] [run=run-1 bp=bp-1 node=charge@2] done with charge",
        "[WARNING] after",
    ]


def test_json_fields_follow_an_inlined_successor_and_come_back() -> None:
    root, stream, handler = capture(JsonFormatter())
    try:
        FakeExecution("run-2", "a", 0, inline=FakeExecution("run-2", "b", 1)).handle()
    finally:
        root.removeHandler(handler)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["node_id"], r["iteration"], r["run_id"], r["blueprint_id"]) for r in records] == [
        ("a", 0, "run-2", "bp-1"), ("b", 1, "run-2", "bp-1"), ("b", 1, "run-2", "bp-1"), ("a", 0, "run-2", "bp-1")]
    assert current_node() is None


def test_the_task_result_names_the_run_and_every_node_the_task_handled() -> None:
    handled = start_task_record()
    message = NodeMessage(run_id="run-3", blueprint_id="bp-1", node_id="a")
    FakeExecution("run-3", "a", 0, inline=FakeExecution("run-3", "b", 0)).handle()
    summary = task_summary([message], handled)
    assert summary["run"] == "run-3" and summary["blueprint"] == "bp-1"
    assert summary["nodes"] == ["a@0", "b@0"]
