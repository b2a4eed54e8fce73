"""Iterations as people read them (SPEC §3.8): a node execution in nested loops is shown as its
passes, outer loop first (`ask@2.5`), and that form, or the raw iteration number, is what
`resume --node` and `show --node` accept; a bad value is refused by name."""

from __future__ import annotations

import re
from typing import Any

import pytest
from click.testing import CliRunner

from flowcraft_celery.cli.main import main
from flowcraft_celery.cli.output import status_lines
from flowcraft_celery.cli.show import select_rows, view_lines
from flowcraft_celery.distributed.ops.runview import NodeRow, RunView
from flowcraft_celery.distributed.runs.awaiting import awaiting_choice
from flowcraft_celery.distributed.runs.errors import RunError
from flowcraft_celery.engine.registry import NodeResult, Registry
from flowcraft_celery.local.runner import LocalRunner
from flowcraft_celery.model import iterations
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.model.graph import Graph


def nested_wait() -> Flow:
    """An outer loop (2 passes) around an inner loop (2 passes) whose body waits at `ask`."""
    return (Flow("nw").node("init", "zero_o")
            .node("octl", "loop-controller", params={"condition": "o < 2"}, join="any")
            .node("obody", "inc_o").node("zi", "zero_i")
            .node("ictl", "loop-controller", params={"condition": "i < 2"}, join="any")
            .node("ibody", "inc_i").node("ask", "wait").node("done", "echo")
            .edge("init", "octl").edge("octl", "obody", action="continue").edge("obody", "zi").edge("zi", "ictl")
            .edge("ictl", "ibody", action="continue").edge("ibody", "ask").edge("ask", "ictl")
            .edge("ictl", "octl", action="break").edge("octl", "done", action="break"))


def registry() -> Registry:
    reg = Registry()

    def counter(key: str) -> Any:
        def incr(ctx: Any) -> int:
            value = (ctx.context.get(key) or 0) + 1
            ctx.context.set(key, value)
            return value
        return incr

    reg.register("zero_o", lambda ctx: ctx.context.set("o", 0))
    reg.register("zero_i", lambda ctx: ctx.context.set("i", 0))
    reg.register("inc_o", counter("o"))
    reg.register("inc_i", counter("i"))
    reg.register("echo", lambda ctx: NodeResult(output=ctx.input))
    return reg


def test_passes_or_the_iteration_number_give_the_same_iteration() -> None:
    width = iterations.width_for(2)
    assert iterations.parse("2.5", 2, width) == iterations.parse("2000005", 2, width) == 2_000_005
    assert iterations.parse("3", 1, width) == 3 and iterations.parse("0", 0, width) == 0
    assert iterations.parse("0.0", 2, width) == 0
    for text in ("2.x", "", "-1", "2,5", "2.5 .1", "٣"):
        expected = f"iteration {text!r} is neither passes like '2.5', outer loop first, nor an iteration number"
        with pytest.raises(ValueError, match=re.escape(expected)):
            iterations.parse(text, 2, width)
    with pytest.raises(ValueError, match=r"'1\.2\.3' gives 3 passes, but the node is in 2 loops \(e\.g\. '2\.5'"):
        iterations.parse("1.2.3", 2, width)
    with pytest.raises(ValueError, match="'5': the node is outside every loop, so its iteration is 0"):
        iterations.parse("5", 0, width)
    with pytest.raises(ValueError, match="at most 1000000 passes"):
        iterations.parse("0.1000000", 2, width)


def test_the_graph_reads_a_node_execution_as_commands_show_it() -> None:
    graph = Graph(nested_wait().build())
    at = graph.iteration_at
    assert graph.execution_label("ask", at((2, 5))) == "ask@2.5"
    assert graph.execution_label("obody", at((2,))) == "obody@2" and graph.execution_label("done", 0) == "done@0"
    assert graph.execution("ask@2.5") == ("ask", at((2, 5))) == graph.execution(f"ask@{at((2, 5))}")
    assert graph.execution("ask") == ("ask", None) and graph.execution("obody@3") == ("obody", 3)
    with pytest.raises(ValueError, match=r"node 'ask': iteration '2\.x' is neither passes"):
        graph.execution("ask@2.x")
    with pytest.raises(ValueError, match=r"node 'obody': iteration '2\.5' gives 2 passes, but the node is in 1 loop"):
        graph.execution("obody@2.5")
    with pytest.raises(ValueError, match="no node 'nope' in blueprint 'nw'"):
        graph.execution("nope@1.0")
    # a fallback (chain) of a node in the inner body runs in that node's iteration
    fallback = Graph(nested_wait().node("check", "echo", fallback="fb").node("fb", "echo", fallback="fb2")
                     .node("fb2", "echo").edge("ibody", "check").build())
    assert fallback.loops_of("fb") == () and fallback.execution_label("fb2", at((2, 5))) == "fb2@2.5"
    assert fallback.execution("fb@1.1") == ("fb", at((1, 1)))
    with_at = Graph(Flow("at").node("a@b", "echo").build())
    assert with_at.execution("a@b") == ("a@b", None) and with_at.execution("a@b@0") == ("a@b", 0)


def test_resume_picks_the_awaiting_execution_named_by_its_passes_or_its_number() -> None:
    graph = Graph(nested_wait().build())
    awaiting = ["ask@2000001", "done@0"]
    assert awaiting_choice(graph, "r", awaiting, None) == "ask@2000001"
    assert awaiting_choice(graph, "r", awaiting, "ask") == "ask@2000001"
    assert awaiting_choice(graph, "r", awaiting, "ask@2.1") == "ask@2000001"
    assert awaiting_choice(graph, "r", awaiting, "ask@2000001") == "ask@2000001"
    with pytest.raises(RunError, match=re.escape("node 'ask@2.0' of run 'r' is not awaiting; "
                                                 "awaiting: ['ask@2.1', 'done@0']")):
        awaiting_choice(graph, "r", awaiting, "ask@2.0")
    with pytest.raises(RunError, match=r"cannot resume 'ask@2\.x' of run 'r': node 'ask': iteration '2\.x' is neither"):
        awaiting_choice(graph, "r", awaiting, "ask@2.x")


def test_status_shows_an_awaiting_execution_with_its_passes() -> None:
    graph = Graph(nested_wait().build())
    doc = {"runId": "r", "blueprintId": "nw", "status": "awaiting", "awaiting": ["ask@1000001"]}
    lines = status_lines(doc, lambda token: graph.execution_label(*_split(token)))
    assert any(line.split(None, 1) == ["awaiting", "ask (iteration 1.1)  (continue with `flowcraft-celery resume`)"]
               for line in lines), lines
    assert any("ask (iteration 1000001)" in line for line in status_lines(doc))  # no blueprint: the number


def _split(token: str) -> tuple[str, int]:
    node, _, number = token.rpartition("@")
    return node, int(number)


def test_show_prints_passes_and_selects_a_node_execution_by_them() -> None:
    graph = Graph(nested_wait().build())
    at = graph.iteration_at
    rows = [NodeRow("ask", at(p), "wait", "succeeded", label=graph.iteration_label("ask", at(p)))
            for p in [(0, 0), (0, 1), (1, 0)]] + [NodeRow("done", None, "echo", "not-run")]
    view = RunView("r", {"runId": "r", "blueprintId": "nw", "status": "running"}, graph, list(rows))
    table = view_lines(view, 0.0)
    assert [line.split()[:2] for line in table[4:7]] == [["ask", "0.0"], ["ask", "0.1"], ["ask", "1.0"]]
    select_rows(view, "ask@1.0")
    assert [r.iteration for r in view.rows] == [at((1, 0))]
    view.rows = list(rows)
    select_rows(view, "ask@1")  # the iteration number: (0, 1)
    assert [r.label for r in view.rows] == ["0.1"]
    view.rows = list(rows)
    select_rows(view, "ask")
    assert len(view.rows) == 3
    with pytest.raises(ValueError, match=r"iteration '1\.x'"):
        select_rows(view, "ask@1.x")
    unknown = RunView("r", {"runId": "r"}, None, list(rows))  # the blueprint is not known here
    select_rows(unknown, f"ask@{at((1, 0))}")
    assert [r.label for r in unknown.rows] == ["1.0"]
    with pytest.raises(ValueError, match="only an iteration number"):
        select_rows(unknown, "ask@1.0")


def test_the_local_runner_resumes_the_execution_named_by_its_passes() -> None:
    runner = LocalRunner(registry())
    flow = nested_wait().build()
    result = runner.run(flow)
    resumed = []
    while result.status == "awaiting":
        waiting = runner._runs[result.run_id].awaiting
        (node_id, (iteration, _)), = waiting.items()
        label = Graph(flow).execution_label(node_id, iteration)
        with pytest.raises(ValueError, match=r"node 'ask@9\.9' of run .* is not awaiting; awaiting: \['ask@"):
            runner.resume(result.run_id, None, None, "ask@9.9")
        with pytest.raises(ValueError, match=r"iteration '0\.x' is neither passes"):
            runner.resume(result.run_id, None, None, "ask@0.x")
        resumed.append(label)
        result = runner.resume(result.run_id, None, label, label)
    assert result.status == "completed", result.errors
    assert resumed == ["ask@0.0", "ask@0.1", "ask@1.0", "ask@1.1"]
    assert result.context["_outputs.ask"] == "ask@1.1"


def test_help_of_resume_and_show_names_the_forms_they_accept() -> None:
    for command in ("resume", "show"):
        text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
        assert "--node NODE[@ITERATION]" in text and "ask@2.5 (passes, outer loop first" in text, text
        assert "ask@2000005" in text
