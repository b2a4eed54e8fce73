"""What an operator sees of a running deployment: `show`, `graph`, `queues`, `dlq`, the metrics
endpoint, Flower (its API and its task list in headless Chromium), node log lines, `celery result`
on node tasks, quiet reconcile passes, and no password or account key anywhere."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueClient
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.operator.conftest import ROOT, Deployment
from tests.integration.operator.operator_nodes import NAP_SECONDS
from tests.integration.polling import wait_for
from transports.azurequeue.naming import azure_queue_name

ARTIFACTS = ROOT / ".artifacts" / "operator"
NODES = ("start", "left", "right", "flaky", "join", "nap", "approval", "finish")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@dataclass
class Scenario:
    """One run of op-flow, and what the operator commands said along the way."""

    run_id: str
    sleeping: dict[str, Any]
    sleeping_text: str
    sleeping_queues: dict[str, Any]
    awaiting_graph: str
    final: dict[str, Any]
    final_text: str


def save(name: str, text: str) -> None:
    """Keep what a command printed as a test artifact (docs/operations.md quotes them)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_text(text, encoding="utf-8")


def node_row(view: dict[str, Any], node: str) -> dict[str, Any]:
    """The latest row of `node` in a `show --json` view."""
    rows = [r for r in view["nodes"] if r["node"] == node]
    assert rows, f"no row for {node} in {view}"
    return rows[-1]


@pytest.fixture(scope="module")
def scenario(deployment: Deployment) -> Scenario:
    """Start op-flow; watch it sleep, await, resume and complete."""
    run_id = deployment.cli("start", "op-flow", "--context", '{"order": 7}').stdout.strip()

    def sleeping() -> dict[str, Any] | None:
        view = deployment.cli_json("show", run_id)
        state = node_row(view, "nap")["state"]
        assert state != "succeeded", f"nap slept its {NAP_SECONDS} s before `show` saw it sleep: {view}"
        return view if state == "sleeping" else None

    sleeping_view = wait_for(sleeping, 120, "the nap node to sleep", 1)
    sleeping_text = deployment.cli("show", run_id).stdout
    sleeping_queues = deployment.cli_json("queues", "--delayed")
    save("show-sleeping.txt", sleeping_text)
    save("queues.txt", deployment.cli("queues", "--delayed").stdout)
    wait_for(lambda: node_row(deployment.cli_json("show", run_id), "approval")["state"] == "awaiting", 90,
             "the approval node to await", 1)
    awaiting_graph = deployment.cli("graph", "op-flow", "--run", run_id).stdout
    save("graph-awaiting.mmd", awaiting_graph)
    deployment.cli("resume", run_id)
    final = wait_for(lambda: (v := deployment.cli_json("show", run_id))["status"] == "completed" and v, 90,
                     "the run to complete", 1)
    return Scenario(run_id, sleeping_view, sleeping_text, sleeping_queues, awaiting_graph, final,
                    deployment.cli("show", run_id).stdout)


def scrape(deployment: Deployment) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The metrics endpoint over HTTP: (sample name, sorted labels) -> value."""
    text = deployment.http(deployment.metrics_port, "/metrics")
    save("metrics.txt", text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def flower_node_tasks(deployment: Deployment, run_id: str) -> list[dict[str, Any]]:
    """Flower's tasks of the run's node messages, each with its parsed `msg`."""
    tasks = deployment.flower("/api/tasks?limit=2000").values()
    found = []
    for task in tasks:
        if not str(task.get("name", "")).startswith("flowcraft.node."):
            continue
        try:
            kwargs = ast.literal_eval(task.get("kwargs") or "{}")
        except (ValueError, SyntaxError):
            continue
        msg = kwargs.get("msg") if isinstance(kwargs, dict) else None
        if isinstance(msg, dict) and msg.get("run") == run_id:
            found.append({**task, "msg": msg})
    return found


# -- the run's story: show, graph --------------------------------------------------------------

def test_show_tells_each_nodes_story_while_it_sleeps_and_when_it_is_done(deployment: Deployment,
                                                                        scenario: Scenario) -> None:
    sleeping = scenario.sleeping
    nap = node_row(sleeping, "nap")
    assert nap["due"] > sleeping["createdAt"] and nap["due"] - time.time() < NAP_SECONDS + 60
    flaky = node_row(sleeping, "flaky")
    assert (flaky["state"], flaky["attempts"]) == ("succeeded", 2)
    for node in ("start", "left", "right", "join"):
        row = node_row(sleeping, node)
        assert row["state"] == "succeeded" and row["worker"] in deployment.worker_names, row
        assert row["start"] <= row["end"] and row["duration"] >= 0
    assert {node_row(sleeping, n)["state"] for n in ("approval", "finish")} == {"not-run"}
    assert re.search(r"^nap\s+0\s+sleeping\s.*\(in \d", scenario.sleeping_text, re.MULTILINE)
    assert re.search(r"^flaky\s+0\s+succeeded\s+2\s+w[12]-", scenario.sleeping_text, re.MULTILINE)

    final = scenario.final
    assert final["status"] == "completed"
    assert {node_row(final, n)["state"] for n in NODES} == {"succeeded"}
    assert re.search(r"nodes: 8 succeeded", scenario.final_text)
    watched = deployment.cli("show", scenario.run_id, "--watch", "--interval", "0.5", timeout=60).stdout
    assert "status completed" in watched  # --watch stops by itself once the run has ended


def test_graph_draws_the_blueprint_and_colours_a_run_by_node_state(deployment: Deployment,
                                                                   scenario: Scenario) -> None:
    ids = dict(re.findall(r'^\s+(n\d+)\["([^<"]+)<br/>', scenario.awaiting_graph, re.MULTILINE))
    by_node = {node: mermaid_id for mermaid_id, node in ids.items()}
    assert set(by_node) == set(NODES)
    classes = {name: set(members.split(",")) for members, name in
               re.findall(r"^\s+class (\S+) (\S+)$", scenario.awaiting_graph, re.MULTILINE)}
    assert classes["st_awaiting"] == {by_node["approval"]}
    assert classes["st_not_run"] == {by_node["finish"]}
    assert classes["st_succeeded"] == {by_node[n] for n in ("start", "left", "right", "flaky", "join", "nap")}
    plain = deployment.cli("graph", "op-flow").stdout
    assert plain.startswith("flowchart TD") and "classDef" not in plain
    assert f'{by_node["join"]} --> {by_node["nap"]}' in plain


# -- Flower (first, while the run's tasks are the newest) ------------------------------------

def test_flower_api_lists_every_node_task_with_its_state(deployment: Deployment, scenario: Scenario) -> None:
    def complete() -> list[dict[str, Any]] | None:
        tasks = flower_node_tasks(deployment, scenario.run_id)
        done = {t["msg"]["node"] for t in tasks if t["state"] == "SUCCESS"}
        return tasks if done >= set(NODES) else None

    tasks = wait_for(complete, 90, "Flower to list every node task as SUCCESS", 2)
    flaky = [t for t in tasks if t["msg"]["node"] == "flaky"]
    assert [t["state"] for t in flaky] == ["SUCCESS"] and flaky[0]["retries"] >= 1
    assert all(t["worker"] in deployment.worker_names for t in tasks)
    assert {t["name"] for t in tasks} >= {"flowcraft.node.op-step", "flowcraft.node.op-flaky",
                                          "flowcraft.node.sleep", "flowcraft.node.wait"}
    result = deployment.flower(f"/api/task/result/{flaky[0]['uuid']}")
    assert result["state"] == "SUCCESS" and result["result"]["run"] == scenario.run_id


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, timeout=900, capture_output=True)
        found = shutil.which("chromium")
    assert found, "apt-get installed no chromium"
    return found


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[list[str]]:
    """The headless Chromium command line, with a fresh profile."""
    yield [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1600,1000",
           "--virtual-time-budget=20000"]


def test_flower_task_list_in_headless_chromium_shows_the_node_tasks(deployment: Deployment, scenario: Scenario,
                                                                    chromium: list[str]) -> None:
    tasks = wait_for(lambda: (t := flower_node_tasks(deployment, scenario.run_id)) and len(t) >= 10 and t, 90,
                     "Flower's tasks of the run", 2)
    url = f"http://127.0.0.1:{deployment.flower_port}/tasks"
    dom = subprocess.run([*chromium, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "flower-tasks.html").write_text(dom, encoding="utf-8")
    rows = re.findall(r'<tr id="([0-9a-f-]{36})"', dom)
    assert {t["uuid"] for t in tasks} <= set(rows), "a node task of the run is missing from Flower's task list"
    for text in ("flowcraft.node.op-flaky", "flowcraft.node.sleep", "flowcraft.node.wait", scenario.run_id,
                 "flaky@0"):
        assert text in dom, f"{text} is not on Flower's task page"
    shot = ARTIFACTS / "flower-tasks.png"
    shot.unlink(missing_ok=True)
    subprocess.run([*chromium, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000


def test_flower_broker_api_and_page_show_every_queue_with_its_depths(deployment: Deployment, scenario: Scenario,
                                                                     chromium: list[str]) -> None:
    poison = ("from flowcraft_celery.distributed.app import app; "
              "app.send_task('flowcraft.node.op-step', kwargs={'msg': {'not': 'a node message'}})")
    deployment.run(["-c", poison])  # dead-lettered by the worker that takes it
    stuck = deployment.cli("start", "op-stuck").stdout.strip()  # one message waits on tasks-nowhere
    try:
        def lengths() -> dict[str, dict[str, Any]] | None:
            listed = {q["name"]: q for q in deployment.flower("/api/queues/length")["active_queues"]}
            seen = listed.get("tasks-nowhere", {}).get("visible") and listed.get("tasks", {}).get("dead_lettered")
            return listed if seen else None

        queues = wait_for(lengths, 90, "Flower to count the message on tasks-nowhere and the dead letter", 1)
        assert {"tasks", "tasks-dlq", "tasks-nowhere"} <= set(queues), sorted(queues)
        nowhere = queues["tasks-nowhere"]
        assert (nowhere["messages"], nowhere["messages_ready"], nowhere["delayed"]) == (1, 1, 0)
        assert (queues["tasks"]["dead_lettered"], queues["tasks-dlq"]["messages"]) == (1, 1)
        assert queues["tasks-dlq"]["kind"] == "dead-letter"
        page = deployment.http(deployment.flower_port, "/broker")
        assert '<tr id="tasks-nowhere">' in page and '<tr id="tasks-dlq">' in page
        url = f"http://127.0.0.1:{deployment.flower_port}/broker"
        dom = subprocess.run([*chromium, "--dump-dom", url], capture_output=True, text=True, timeout=120,
                             check=True).stdout
        save("flower-broker.html", dom)
        for queue in ("tasks-nowhere", "tasks-dlq"):
            row = re.search(rf'<tr id="{queue}">(.*?)</tr>', dom, re.DOTALL)
            assert row is not None, f"the Broker page in Chromium has no row for {queue}"
            assert re.findall(r"<td[^>]*>\s*([^<]*?)\s*</td>", row.group(1))[:2] == [queue, "1"]
    finally:
        deployment.cli("cancel", stuck)
        deployment.cli("dlq", "purge", "tasks", "--yes")


def test_a_rate_limit_set_from_flower_on_a_user_node_task_reaches_the_workers(deployment: Deployment) -> None:
    name = deployment.worker_names[0]

    def limits() -> str:
        """The worker's registered tasks with their rate limits (`celery inspect registered rate_limit`)."""
        ask = ("import json; from flowcraft_celery.distributed.app import app; "
               f"print(json.dumps(app.control.inspect(destination=[{name!r}]).registered('rate_limit')))")
        return deployment.run(["-c", ask], timeout=90).stdout

    wait_for(lambda: name in deployment.flower("/api/workers?refresh=1"), 60, "Flower to know the worker")
    status, answer = deployment.flower_post(f"/api/task/rate-limit/flowcraft.node.op-step?workername={name}"
                                            "&ratelimit=600/m")
    try:
        assert status == 200, f"rate-limit: HTTP {status} {answer}"  # Flower has no FLOWCRAFT_NODE_MODULES
        assert "flowcraft.node.op-step [rate_limit=600/m]" in limits()
        status, answer = deployment.flower_post(f"/api/task/timeout/flowcraft.node.op-flaky?workername={name}"
                                                "&soft=50&hard=60")
        assert status == 200, f"timeout: HTTP {status} {answer}"
        status, answer = deployment.flower_post(f"/api/task/rate-limit/flowcraft.node.no-such-node?workername={name}"
                                                "&ratelimit=1/m")
        assert status == 404, "a node task no worker published is unknown to Flower"
    finally:
        deployment.flower_post(f"/api/task/rate-limit/flowcraft.node.op-step?workername={name}&ratelimit=0")


# -- logs and results --------------------------------------------------------------------------

def test_node_log_lines_carry_run_blueprint_node_and_iteration(deployment: Deployment, scenario: Scenario) -> None:
    logs = "\n".join(text for name, text in deployment.logs().items() if name.startswith("w"))
    scope = f"[run={scenario.run_id} bp=op-flow node="
    assert re.search(rf"{re.escape(scope)}flaky@0\] op-flaky attempt 1$", logs, re.MULTILINE)
    assert re.search(rf"{re.escape(scope)}flaky@0\] op-flaky attempt 2$", logs, re.MULTILINE)
    assert re.search(rf"{re.escape(scope)}flaky@0\] run \S+ node flaky attempt 1 failed", logs, re.MULTILINE)
    for node in ("start", "left", "right", "join", "finish"):
        assert f"{scope}{node}@0] op-step working on {node}" in logs
    for name, text in deployment.logs().items():
        assert "--- Logging error ---" not in text, f"a log line could not be formatted in {name}"


def test_celery_result_of_a_node_task_answers_at_once(deployment: Deployment, scenario: Scenario) -> None:
    tasks = wait_for(lambda: [t for t in flower_node_tasks(deployment, scenario.run_id)
                              if t["msg"]["node"] == "join" and t["state"] == "SUCCESS"], 90, "the join task")
    started = time.monotonic()
    answer = deployment.celery("result", tasks[0]["uuid"], timeout=60).stdout
    assert time.monotonic() - started < 30
    result = ast.literal_eval(answer.strip())
    assert result["run"] == scenario.run_id and result["nodes"] == ["join@0"]


# -- queues, dead letters, start --wait, reconcile, metrics ------------------------------------

def test_queues_lists_the_deployments_queues_with_delayed_messages(deployment: Deployment,
                                                                   scenario: Scenario) -> None:
    listing = scenario.sleeping_queues
    assert listing["prefix"] == f"{deployment.tag}-"
    queues = {q["queue"]: q for q in listing["queues"]}
    assert all(q["azureName"].startswith(f"{deployment.tag}-") for q in queues.values())
    tasks = queues["tasks"]
    assert tasks["kind"] == "tasks" and tasks["delayed"] >= 1 and tasks["messages"] >= tasks["delayed"]
    naps = [t for t in tasks["delayedTasks"] if t["task"] == "flowcraft.node.sleep"]
    assert len(naps) == 1 and naps[0]["due"] == pytest.approx(node_row(scenario.sleeping, "nap")["due"], abs=2)
    assert {q["kind"] for q in queues.values()} <= {"tasks", "dead-letter"}
    everything = deployment.cli_json("queues", "--all")["queues"]
    assert {"tasks", "control", "events"} <= {q["kind"] for q in everything}


def test_dead_letters_are_shown_requeued_and_purged_and_counted_in_the_metrics(deployment: Deployment,
                                                                                scenario: Scenario) -> None:
    send = ("from flowcraft_celery.distributed.app import app; "
            "print(app.send_task('flowcraft.node.op-step', kwargs={'msg': {'not': 'a node message'}}).id)")
    task_id = deployment.run(["-c", send]).stdout.strip()

    def dead_letters() -> list[dict[str, Any]]:
        return list(deployment.cli_json("dlq", "show", "tasks")["shown"])

    first = wait_for(dead_letters, 90, "the rejected message in the dead-letter queue", 1)
    save("dlq-show.txt", deployment.cli("dlq", "show", "tasks").stdout)
    assert [(d["taskId"], d["task"], d["reason"], d["queue"]) for d in first] == [
        (task_id, "flowcraft.node.op-step", "not a flowcraft node message: field 'run' must be non-empty text, "
         "got None", "tasks")]
    listed = {q["queue"]: q for q in deployment.cli_json("queues")["queues"]}
    assert listed["tasks-dlq"]["kind"] == "dead-letter" and listed["tasks-dlq"]["messages"] == 1
    samples = scrape(deployment)
    assert sample(samples, "flowcraft_dead_letter_messages", queue="tasks") == 1

    assert "re-drove 1 message(s)" in deployment.cli("dlq", "requeue", "tasks").stdout
    again = wait_for(lambda: [d for d in dead_letters() if d["messageId"] != first[0]["messageId"]], 90,
                     "the re-driven message to be rejected again")
    assert [d["taskId"] for d in again] == [task_id]
    assert "deleted 1 message(s)" in deployment.cli("dlq", "purge", "tasks", "--yes").stdout
    assert deployment.cli_json("dlq", "show", "tasks")["messages"] == 0


def test_start_wait_shows_progress_and_prints_the_users_context(deployment: Deployment) -> None:
    done = deployment.cli("start", "op-quick", "--context", '{"x": 1}', "--wait", "--timeout", "120")
    assert json.loads(done.stdout)["context"] == {"x": 1, "start": "start", "finish": "finish"}
    assert "completed: 2 succeeded" in done.stderr
    everything = deployment.cli("start", "op-quick", "--wait", "--all-keys", "--timeout", "120")
    assert json.loads(everything.stdout)["context"]["_outputs.finish"] == "finish"


def test_quiet_reconcile_passes_stay_out_of_flower_and_active_ones_show(deployment: Deployment,
                                                                        scenario: Scenario) -> None:
    def reconcile_tasks() -> list[dict[str, Any]]:
        tasks = deployment.flower("/api/tasks?limit=2000").values()
        return [t for t in tasks if t.get("name") == "flowcraft.reconcile"]

    before = {t["uuid"] for t in reconcile_tasks()}
    stuck = deployment.cli("start", "op-stuck").stdout.strip()  # its node's queue has no worker: it stalls
    try:
        wait_for(lambda: {t["uuid"] for t in reconcile_tasks()} - before, 90, "an active reconcile pass in Flower", 2)
        nowhere = azure_queue_name(f"{deployment.queue}-nowhere", deployment.env["FLOWCRAFT_QUEUE_PREFIX"])
        QueueClient.from_connection_string(deployment.env["AZURE_STORAGE_CONNECTION_STRING"],
                                           nowhere).clear_messages()  # the node's message is lost: re-sent
        wait_for(lambda: [t for t in reconcile_tasks() if ast.literal_eval(t["result"])["republished"] >= 1],
                 90, "a reconcile pass that re-sends the lost message", 2)
    finally:
        deployment.cli("cancel", stuck)
    listed = reconcile_tasks()
    for task in listed:  # only passes that found a stalled run are listed
        assert task["state"] == "SUCCESS" and ast.literal_eval(task["result"])["stalled"] >= 1, task
        assert task["worker"] in deployment.worker_names
    passes = deployment.logs()["beat.log"].count("Sending due task flowcraft-reconcile")
    assert passes > len(listed) + 2, f"{passes} passes, {len(listed)} in Flower: quiet ones must be missing"


def test_metrics_endpoint_counts_runs_nodes_retries_and_reconcile_passes(deployment: Deployment,
                                                                         scenario: Scenario) -> None:
    samples = scrape(deployment)
    assert sample(samples, "flowcraft_node_executions_total", uses="op-flaky") == 2
    assert sample(samples, "flowcraft_node_retries_total", uses="op-flaky") == 1
    assert sample(samples, "flowcraft_node_successes_total", uses="op-flaky") == 1
    assert sample(samples, "flowcraft_node_failures_total", uses="op-flaky") is None
    assert (sample(samples, "flowcraft_runs", status="completed") or 0) >= 1
    assert (sample(samples, "flowcraft_runs", status="cancelled") or 0) >= 1  # op-stuck
    assert (sample(samples, "flowcraft_reconcile_passes_total", result="quiet") or 0) >= 3
    assert (sample(samples, "flowcraft_reconcile_passes_total", result="active") or 0) >= 1
    assert (sample(samples, "flowcraft_reconcile_republished_total") or 0) >= 1
    assert sample(samples, "flowcraft_queue_messages", queue="tasks", kind="tasks") is not None
    assert {sample(samples, "flowcraft_metrics_source_up", source=s) for s in ("queues", "runs", "counters")} == {1}

    # only task and dead-letter queues have metrics (reply and event queues have random names)
    assert {dict(k[1])["kind"] for k in samples if k[0] == "flowcraft_queue_messages"} <= {"tasks", "dead-letter"}
    # what one refresh costs (intervals are 0 here, so every scrape refreshes)
    second = scrape(deployment)
    queues = len([k for k in second if k[0] == "flowcraft_queue_messages"])

    def spent(operation: str, service: str) -> float:
        key = ("flowcraft_metrics_requests_total", (("operation", operation), ("service", service)))
        return second.get(key, 0) - samples.get(key, 0)

    assert spent("list", "storage-queue") == 1
    assert spent("get_properties", "storage-queue") == queues
    busy = [k for k, v in samples.items() if k[0] == "flowcraft_queue_messages" and dict(k[1])["kind"] == "tasks"
            and v > 0]
    assert spent("peek", "storage-queue") <= len(busy) + 1  # the oldest message's age: a peek per busy task queue
    assert spent("docs:query", "cosmos") == 6


def test_metrics_endpoint_has_latency_histograms_run_durations_and_executions_per_worker(
        deployment: Deployment, scenario: Scenario) -> None:
    samples = scrape(deployment)
    assert sample(samples, "flowcraft_node_run_seconds_count", uses="op-flaky") == 2
    assert sample(samples, "flowcraft_node_queue_wait_seconds_count", uses="op-flaky") == 2
    steps = sample(samples, "flowcraft_node_executions_total", uses="op-step")
    assert steps and sample(samples, "flowcraft_node_run_seconds_count", uses="op-step") == steps
    assert sample(samples, "flowcraft_node_run_seconds_bucket", uses="op-step", le="+Inf") == steps
    waited = sample(samples, "flowcraft_node_queue_wait_seconds_sum", uses="op-step")
    assert waited is not None and 0 <= waited < 60 * steps
    # the flaky branch's retry came back after its 500 ms delay: its wait counts from the due time
    assert (sample(samples, "flowcraft_node_queue_wait_seconds_bucket", uses="op-flaky", le="+Inf") or 0) == 2
    completed = sample(samples, "flowcraft_run_duration_seconds_count", blueprint="op-flow", status="completed")
    assert completed is not None and completed >= 1
    took = sample(samples, "flowcraft_run_duration_seconds_sum", blueprint="op-flow", status="completed") or 0
    assert took >= NAP_SECONDS * completed  # every op-flow run sleeps NAP_SECONDS
    assert (sample(samples, "flowcraft_run_duration_seconds_count", blueprint="op-stuck", status="cancelled")
            or 0) >= 1
    per_worker = {dict(k[1])["worker"]: v for k, v in samples.items()
                  if k[0] == "flowcraft_worker_node_executions_total"}
    assert set(per_worker) <= set(deployment.worker_names) and sum(per_worker.values()) == sum(
        v for k, v in samples.items() if k[0] == "flowcraft_node_executions_total")
    assert sample(samples, "flowcraft_queue_oldest_message_age_seconds", queue="tasks") is not None


def test_flower_buttons_and_worker_pages_answer_at_celerys_default_timeouts(deployment: Deployment) -> None:
    workers = deployment.flower("/api/workers?refresh=1")  # what the dashboard asks (1 s inspect)
    assert set(deployment.worker_names) <= set(workers), sorted(workers)
    assert all(workers[w].get("stats") for w in deployment.worker_names), "a worker page without stats"
    name = deployment.worker_names[0]
    for action in ("grow", "shrink"):  # Flower's pool buttons; it waits 1 s for the worker's reply
        status, answer = deployment.flower_post(f"/api/worker/pool/{action}/{name}?n=1")
        assert status == 200, f"pool {action}: HTTP {status} {answer}"
        assert name in answer["message"], answer
    status, answer = deployment.flower_post(f"/api/worker/queue/add-consumer/{name}?queue=tasks-extra")
    assert status == 200, f"add-consumer: HTTP {status} {answer}"
    status, answer = deployment.flower_post(f"/api/worker/queue/cancel-consumer/{name}?queue=tasks-extra")
    assert status == 200, f"cancel-consumer: HTTP {status} {answer}"


# -- secrets -----------------------------------------------------------------------------------

def test_no_planted_password_or_account_key_shows_anywhere(deployment: Deployment, scenario: Scenario) -> None:
    report = deployment.celery("report").stdout
    assert re.search(r"flowcraft_redis_url: 'redis://:\*+@127\.0\.0\.1:\d+/0'", report)
    conf = deployment.celery("inspect", "conf", "--json", "-d", deployment.worker_names[0], timeout=90).stdout
    settings = json.loads(conf)[deployment.worker_names[0]]
    assert settings["flowcraft_redis_url"].startswith("redis://:********@")
    assert "AccountKey=********" in settings["broker_transport_options"]["connection_string"]
    workers = deployment.http(deployment.flower_port, "/api/workers?refresh=1", timeout=120)
    assert all(name in json.loads(workers) for name in deployment.worker_names)
    wrong = deployment.redis.url.replace(deployment.redis.password, "not-the-password")
    error = deployment.cli("show", scenario.run_id, env={"REDIS_URL": wrong}, check=False)
    assert error.returncode != 0
    metrics = deployment.http(deployment.metrics_port, "/metrics")
    texts = {"celery report": report, "inspect conf": conf, "Flower /api/workers": workers, "metrics": metrics,
             "error output": error.stdout + error.stderr, **deployment.logs()}
    for where, text in texts.items():
        for secret_name, secret in deployment.planted.items():
            assert secret not in text, f"the {secret_name} shows in {where}"
        assert "not-the-password" not in text, f"the wrong password shows in {where}"
