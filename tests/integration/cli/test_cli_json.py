"""The run and queue commands as a script meets them: `--json` on each, `@FILE` options, the status of a
cancelled run that was awaiting, and an unknown queue as an error (one real worker, the dev services)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowcraft_celery.devtools.workers import WorkerGroup
from tests.integration import names
from tests.integration.polling import wait_for

ROOT = Path(__file__).resolve().parents[3]
ASK = {"id": "ask", "nodes": [{"id": "approve", "uses": "wait"}, {"id": "after", "uses": "wait"}],
       "edges": [{"source": "approve", "target": "after", "action": "yes"}]}


class User:
    """`flowcraft-celery` as its own process with one deployment's settings."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env, self.folder = env, folder

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flowcraft_celery.cli", *args], env=self.env, cwd=self.folder,
                              capture_output=True, text=True, timeout=120, check=False)

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, (args, done.stderr)
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def user(services_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[User]:
    from tests.integration.stores import cosmos_support

    folder = tmp_path_factory.mktemp("clijson")
    (folder / "flows").mkdir()
    (folder / "flows" / "ask.json").write_text(json.dumps(ASK), encoding="utf-8")
    queue = names.unique_name("clijson")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWCRAFT_", "CELERY_"))}
    with cosmos_support.temp_database("clijson") as database:
        env = {**base, **services_env, "FLOWCRAFT_DEFAULT_QUEUE": queue, "FLOWCRAFT_KEY_PREFIX": f"{queue}:",
               "FLOWCRAFT_COSMOS_DATABASE": database, "FLOWCRAFT_TASK_EVENTS": "false", "FLOWCRAFT_BLUEPRINTS": "flows",
               "FLOWCRAFT_RETENTION_DAYS": "0", "PYTHONPATH": str(ROOT)}
        with WorkerGroup(env, folder / "logs", cwd=folder) as group:
            group.worker(concurrency=1)
            group.wait_ready(90)
            yield User(env, folder)


def awaiting(user: User, run_id: str) -> dict[str, Any]:
    return dict(wait_for(lambda: (doc := user.json("status", run_id))["status"] == "awaiting" and doc, 60,
                         f"run {run_id} to await", 0.5))


def test_start_resume_and_cancel_print_json_and_a_cancelled_run_awaits_nothing(user: User) -> None:
    context = user.folder / "context.json"
    context.write_text('{"order": 7}')
    run_id = user.json("start", "ask", "--context", f"@{context}")["runId"]
    assert awaiting(user, run_id)["awaiting"] == ["approve@0"]
    output = user.folder / "output.json"
    output.write_text('{"approved": true}')
    assert user.json("resume", run_id, "yes", "--output", f"@{output}") == {
        "runId": run_id, "resumed": "approve@0", "execution": "approve@0"}
    wait_for(lambda: user.json("status", run_id).get("awaiting") == ["after@0"], 60, "the run to await again", 0.5)
    assert user.json("cancel", run_id) == {"runId": run_id, "cancelled": True}
    assert user.json("cancel", run_id) == {"runId": run_id, "cancelled": False}
    text = user.run("status", run_id).stdout
    lines = dict(line.split(None, 1) for line in text.splitlines())
    assert lines["status"] == "cancelled" and "awaiting" not in lines, text
    assert "flowcraft-celery resume" not in text and "never resumed: the run cancelled" in lines["awaited"]
    result = user.run("show", run_id, "--json")
    assert json.loads(result.stdout)["status"] == "cancelled"
    missing = user.run("start", "ask", "--context", f"@{user.folder / 'nope.json'}")
    assert missing.returncode == 2 and "cannot read file" in missing.stderr and len(missing.stderr.splitlines()) == 1


def test_queue_commands_print_json_and_refuse_an_unknown_queue(user: User) -> None:
    queue = user.env["FLOWCRAFT_DEFAULT_QUEUE"]
    shown = user.json("dlq", "show", queue)
    assert shown["deadLetterQueue"] == f"{queue}-dlq" and shown["shown"] == []
    assert user.json("dlq", "requeue", queue) == {"deadLetterQueue": f"{queue}-dlq", "requeued": 0, "skipped": 0}
    assert user.json("dlq", "purge", queue, "--yes") == {"deadLetterQueue": f"{queue}-dlq", "deleted": 0}
    for command in (["dlq", "show", "nosuchqueue"], ["dlq", "requeue", "nosuchqueue"],
                    ["dlq", "purge", "nosuchqueue", "--yes"]):
        done = user.run(*command)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 1 and len(lines) == 1, (command, done.stderr)
        assert lines[0].startswith("Error: no queue 'nosuchqueue'") and queue in lines[0]


def test_purge_dry_run_prints_json(user: User) -> None:
    report = user.json("purge", "--older-than", "1h", "--dry-run")
    assert report["dryRun"] is True and report["olderThanSeconds"] == 3600
    assert set(report["removed"]) == {"statusItems", "contextItems", "redisKeys"}
