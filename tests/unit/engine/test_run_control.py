"""Resume, cancel, subflow depth, webhooks and context writes on the local runner (the engine's
rules, which the Celery runner shares)."""

from __future__ import annotations

from typing import Any

import pytest

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import Registry
from flowcraft_celery.local.runner import LocalRunner
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.stores.memory import MemoryContextStore


def registry() -> Registry:
    reg = Registry()
    reg.register("echo", lambda ctx: ctx.input)
    reg.register("mark", lambda ctx: ctx.context.set(f"seen.{ctx.node_id}", True))
    return reg


def approval() -> Blueprint:
    return (Flow("ap").node("ask", "wait").node("yes", "mark").node("no", "mark")
            .edge("ask", "yes", action="approve").edge("ask", "no", action="reject").build())


def test_resume_with_an_action_no_edge_takes_is_refused_naming_the_actions() -> None:
    runner = LocalRunner(registry())
    run = runner.run(approval())
    with pytest.raises(ValueError, match=r"'aprove'.*'approve', 'reject'"):
        runner.resume(run.run_id, "aprove")
    with pytest.raises(ValueError, match="None"):
        runner.resume(run.run_id, None)
    result = runner.resume(run.run_id, "approve")
    assert result.status == "completed" and result.context.get("seen.yes") is True and "seen.no" not in result.context


def test_any_action_is_accepted_when_default_edges_exist() -> None:
    blueprint = Flow("d").node("ask", "wait").node("next", "mark").edge("ask", "next").build()
    runner = LocalRunner(registry())
    run = runner.run(blueprint)
    assert runner.resume(run.run_id, "whatever").status == "completed"


def test_cancel_keeps_the_context_and_cancels_awaiting_children() -> None:
    parent = (Flow("p").node("first", "mark").node("c", "subflow", params={"blueprintId": "k"})
              .edge("first", "c").build())
    kid = Flow("k").node("ask", "wait").build()
    runner = LocalRunner(registry(), {"k": kid})
    run = runner.run(parent)
    assert run.status == "awaiting"
    child = runner._runs[run.run_id].children["c"]
    runner.cancel(run.run_id)
    parent_doc, child_doc = runner.statuses.get(run.run_id), runner.statuses.get(child)
    assert parent_doc is not None and child_doc is not None
    assert parent_doc["status"] == "cancelled" and child_doc["status"] == "cancelled"
    assert (parent_doc.get("result") or {})["context"]["seen.first"] is True


def test_subflow_depth_limit_fails_the_run_with_the_reason() -> None:
    blueprints = {f"b{i}": Flow(f"b{i}").node("down", "subflow", params={"blueprintId": f"b{i + 1}"}).build()
                  for i in range(5)}
    blueprints["b5"] = Flow("b5").node("leaf", "echo").build()
    assert LocalRunner(registry(), blueprints).run(blueprints["b0"]).status == "completed"
    result = LocalRunner(registry(), blueprints, max_subflow_depth=3).run(blueprints["b0"])
    assert result.status == "failed"
    assert "subflow depth limit of 3" in result.errors[0]["message"]


def test_webhook_node_awaits_with_a_url_and_resumes_with_the_body() -> None:
    blueprint = Flow("w").node("hook", "webhook").node("after", "echo").edge("hook", "after", action="paid").build()
    runner = LocalRunner(registry(), webhook_base_url="https://hooks.example/wh")
    run = runner.run(blueprint)
    url = run.context["_webhooks.hook"]
    assert run.status == "awaiting" and url.startswith(f"https://hooks.example/wh/{run.run_id}/hook/0/")
    secret = url.rsplit("/", 1)[-1]
    assert len(secret) >= 40
    with pytest.raises(ValueError, match="token"):
        runner.deliver_webhook(run.run_id, "hook", ("y" if secret[0] == "x" else "x") + secret[1:], {}, "paid")
    result = runner.deliver_webhook(run.run_id, "hook", secret, {"amount": 5}, "paid")
    assert result.status == "completed"
    assert result.context["_outputs.after"] == {"url": url, "body": {"amount": 5}}
    with pytest.raises(ValueError):
        runner.deliver_webhook(run.run_id, "hook", secret, {"amount": 6}, "paid")


def test_two_webhook_runs_get_different_tokens() -> None:
    blueprint = Flow("w").node("hook", "webhook").build()
    runner = LocalRunner(registry())
    urls = {runner.run(blueprint).context["_webhooks.hook"].rsplit("/", 1)[-1] for _ in range(5)}
    assert len(urls) == 5


def test_last_write_wins_between_a_key_and_the_node_output_of_that_name() -> None:
    store = MemoryContextStore()
    store.create_run("r", {"flag": "initial"})
    store.record_output("r", "flag", 0, "output-0")
    assert store.get("r", "flag") == "output-0"
    store.set("r", "flag", "written")
    assert store.get("r", "flag") == "written" and store.get("r", "_outputs.flag") == "output-0"
    assert store.snapshot("r")["flag"] == "written"
    store.record_output("r", "flag", 1, "output-1")
    assert store.get("r", "flag") == "output-1" == store.snapshot("r")["flag"]


def test_a_node_reads_the_key_another_node_wrote_over_a_node_output() -> None:
    seen: list[Any] = []
    reg = registry()
    reg.register("const", lambda ctx: "node-output")
    reg.register("write", lambda ctx: ctx.context.set("flag", "written"))

    def read(ctx: NodeContext) -> None:
        seen.append(ctx.context.get("flag"))

    reg.register("read", read)
    flow = Flow("lw").node("flag", "const").node("w", "write").node("r", "read").chain("flag", "w", "r")
    assert LocalRunner(reg).run(flow.build()).status == "completed"
    assert seen == ["written"]


def test_a_webhook_in_a_child_run_resumes_the_parent_too() -> None:
    parent = Flow("p").node("kid", "subflow", params={"blueprintId": "k"}).node("after", "echo").edge("kid", "after")
    kid = Flow("k").node("hook", "webhook").node("paid", "echo").edge("hook", "paid", action="paid").build()
    runner = LocalRunner(registry(), {"k": kid})
    run = runner.run(parent.build())
    child = runner._runs[run.run_id].children["kid"]
    url = runner.statuses.get(child) and runner.contexts.get(child, "_webhooks.hook")
    with pytest.raises(ValueError, match="'paid'"):
        runner.deliver_webhook(child, "hook", url.rsplit("/", 1)[-1], {"n": 1}, "refund")
    assert runner.statuses.get(run.run_id)["status"] == "awaiting"  # type: ignore[index]
    result = runner.deliver_webhook(child, "hook", url.rsplit("/", 1)[-1], {"n": 1}, "paid")
    assert result.run_id == child and result.status == "completed"  # the named run's own result
    assert result.context["_outputs.paid"] == {"url": url, "body": {"n": 1}}
    assert "_outputs.after" not in result.context
    parent_result = runner.result(run.run_id)  # the parent, waiting for the child, went on too
    assert parent_result.status == "completed"
    assert parent_result.context["_outputs.after"] == {"url": url, "body": {"n": 1}}
    assert runner.statuses.get(run.run_id)["status"] == "completed"  # type: ignore[index]
