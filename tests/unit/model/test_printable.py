"""`printable`: what every log line and terminal gets of an id, name or value."""

from __future__ import annotations

import logging

from flowcraft_celery.distributed.core.logcontext import NodeLogFilter
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.diagram import mermaid
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.model.ids import printable_id
from flowcraft_celery.model.printable import printable


def test_control_characters_are_escaped_and_long_text_cut() -> None:
    assert printable("a\r\nb\x1b[31m\x00\x7f\x85\u2028") == "a\\r\\nb\\x1b[31m\\x00\\x7f\\x85\\u2028"
    assert printable("ordinary text, é and 日本") == "ordinary text, é and 日本"
    cut = printable("y" * 5000)
    assert cut == "y" * 120 + "...(5000 chars)"
    assert printable("\x00" * 5000, 3) == "\\x00\\x00\\x00...(5000 chars)"


def test_a_valid_id_prints_unchanged_and_a_hostile_one_escaped() -> None:
    assert printable_id("run-1.a_b@c") == "run-1.a_b@c"
    assert printable_id("r" * 255) == "r" * 255
    assert printable_id("r\n" * 300) == "r\\n" * 60 + "...(600 chars)"
    assert printable_id("r" * 256) == "r" * 120 + "...(256 chars)"


def test_log_arguments_are_escaped_once_whatever_the_handlers() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "moved %s: %s", ("run\r\nFORGED\x1b[2J", "y" * 5000),
                               None)
    for _ in range(2):  # two handlers, each with its filter: escaped once, cut once
        NodeLogFilter().filter(record)
    message = record.getMessage()
    assert message.startswith("moved run\\r\\nFORGED\\x1b[2J: yyy") and message.endswith("...(5000 chars)")


def test_graph_escapes_a_nul_in_a_node_id() -> None:
    graph = Graph(Blueprint.from_dict({"id": "g", "nodes": [{"id": "a\x00b\nc", "uses": "u\x1b"}], "edges": []}))
    text = mermaid(graph)
    assert "\x00" not in text and "\x1b" not in text and "a\\x00b\\nc" in text


def test_an_exception_argument_keeps_its_type_and_loses_its_line_breaks() -> None:
    error = ConnectionError("refused\r\nERROR forged")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed: %r / %s / %d", (error, error, 3), None)
    NodeLogFilter().filter(record)
    message = record.getMessage()
    assert message.startswith("failed: ConnectionError(") and message.endswith("refused\\r\\nERROR forged / 3")
    assert "\n" not in message and "\r" not in message
