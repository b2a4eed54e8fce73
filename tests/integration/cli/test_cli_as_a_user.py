"""The command line as a user meets it: wrong settings, broken and huge blueprint files next to good
ones, no worker running, a client without the workers' code, two deployments in one database.

Every command runs as its own `flowcraft-celery` process against the real dev services; workers
are real `celery worker` processes.
"""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.storage.queue import QueueClient

from flowcraft_celery.devtools.workers import WorkerGroup
from tests.integration import names
from tests.integration.polling import wait_for
from transports.azurequeue.naming import azure_queue_name

HELLO = {"id": "hello", "metadata": {"version": "1"},
         "nodes": [{"id": "greet", "uses": "greet"}, {"id": "shout", "uses": "shout"}],
         "edges": [{"source": "greet", "target": "shout"}]}
NODES = '''
from flowcraft_celery import Flow, node


@node("greet")
def greet(ctx):
    return f"hello {ctx.context.get('name')}"


@node("shout")
def shout(ctx):
    return str(ctx.input).upper()
'''
#: The same blueprint written in Python, and one that differs from what the workers run.
CLIENT_SCRIPT = '''
import json, sys
from flowcraft_celery import Client, Flow

def hello(edge=True):
    flow = Flow("hello", version="1").node("greet").node("shout")
    return flow.edge("greet", "shout") if edge else flow

client = Client()
run = client.start(hello(), {"name": "ada"})
doc = run.wait(90)
try:
    client.start(hello(edge=False))
    refused = ""
except Exception as exc:
    refused = str(exc)
print(json.dumps({"status": doc["status"], "shout": client.result(run.run_id)["context"].get("shout"),
                  "refused": refused}))
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Deployment:
    """The settings of one deployment: its own queue and Redis prefix, in a shared test database."""

    env: dict[str, str]
    folder: Path

    def environment(self, **extra: str) -> dict[str, str]:
        """This deployment's settings (plus `extra`); a value `<unset>` leaves the variable out."""
        return {k: v for k, v in {**self.env, **extra}.items() if v != "<unset>"}

    def run(self, *args: str, timeout: float = 90, **extra: str) -> subprocess.CompletedProcess[str]:
        """`flowcraft-celery ARGS` as its own process, with this deployment's settings (plus `extra`)."""
        return subprocess.run([sys.executable, "-m", "flowcraft_celery.cli", *args], env=self.environment(**extra),
                              cwd=self.folder, capture_output=True, text=True, timeout=timeout, check=False)

    def later(self, *args: str, timeout: float = 90, **extra: str) -> Future[subprocess.CompletedProcess[str]]:
        """`run`, started now in the background; `.result()` waits for it."""
        return _SIDE_BY_SIDE.submit(self.run, *args, timeout=timeout, **extra)


#: Commands of one test that may run side by side (each is its own process, mostly waiting).
_SIDE_BY_SIDE = ThreadPoolExecutor(max_workers=4)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failing command writes to stderr (no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def database(services_env: dict[str, str]) -> Iterator[str]:
    """One Cosmos database for the module's deployments (dropped afterwards)."""
    from tests.integration.stores import cosmos_support

    with cosmos_support.temp_database("cliuser") as name:
        yield name


def deployment(services_env: dict[str, str], database: str, folder: Path, **settings: str) -> Deployment:
    tag = names.unique_name("cli")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWCRAFT_", "CELERY_"))}
    env = {**base, **services_env, "FLOWCRAFT_DEFAULT_QUEUE": tag, "FLOWCRAFT_KEY_PREFIX": f"{tag}:",
           "FLOWCRAFT_COSMOS_DATABASE": database, "FLOWCRAFT_TASK_EVENTS": "false"}
    env.update(settings)
    return Deployment(env, folder)



@pytest.fixture
def code(tmp_path: Path) -> Path:
    """The workers' code: a node module and a blueprint folder that also holds files that are not
    blueprints (a package.json, a 10^5-deep JSON file, and 15 MB broken at its end)."""
    (tmp_path / "hellonodes.py").write_text(NODES, encoding="utf-8")
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "hello.json").write_text(json.dumps(HELLO), encoding="utf-8")
    return tmp_path


def add_junk(flows: Path) -> None:
    (flows / "package.json").write_text('{"name": "shop", "version": "1.0.0"}', encoding="utf-8")
    (flows / "deep.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    (flows / "huge.json").write_text('{"id": "huge", "nodes": [' + ",".join(['{"id": "n", "uses": "u"}'] * 600_000),
                                     encoding="utf-8")


# -- wrong settings ------------------------------------------------------------------------------


def test_wrong_settings_are_one_line_naming_the_setting(services_env: dict[str, str], database: str,
                                                        code: Path) -> None:
    user = deployment(services_env, database, code, FLOWCRAFT_BLUEPRINTS="flows")
    cosmos = services_env["AZURE_COSMOS_CONNECTION_STRING"]
    port = str(free_port())

    def storage_on(other: str) -> str:
        return re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{other}", services_env["AZURE_STORAGE_CONNECTION_STRING"])

    checks = [
        (user.later("runs", AZURE_COSMOS_CONNECTION_STRING="<unset>"), 3,
         ["AZURE_COSMOS_CONNECTION_STRING", "not set"]),
        (user.later("runs", AZURE_COSMOS_CONNECTION_STRING=cosmos.replace(":8081", f":{port}")), 4,
         ["Cosmos DB", f"127.0.0.1:{port}", "AZURE_COSMOS_CONNECTION_STRING", "refused"]),
        (user.later("start", "hello", REDIS_URL=f"redis://:secret@127.0.0.1:{port}/0"), 4,
         ["Redis", f"127.0.0.1:{port}", "REDIS_URL", "refused"]),
        (user.later("start", "hello", FLOWCRAFT_BLUEPRINTS="nosuchmodule:flows"), 3,
         ["FLOWCRAFT_BLUEPRINTS", "nosuchmodule:flows", "cannot import"]),
        (user.later("start", "hello", AZURE_STORAGE_CONNECTION_STRING=storage_on(port), FLOWCRAFT_START_TIMEOUT="5"), 4,
         ["not started", f"127.0.0.1:{port}", "AZURE_STORAGE_CONNECTION_STRING"]),
        # settings that are missing or cannot even be parsed: exit 3, naming the variable and the fix
        (user.later("start", "hello", AZURE_STORAGE_CONNECTION_STRING="<unset>"), 3,
         ["not started", "AZURE_STORAGE_CONNECTION_STRING is not set", "services up --env"]),
        (user.later("start", "hello", AZURE_STORAGE_CONNECTION_STRING="garbage"), 3,
         ["AZURE_STORAGE_CONNECTION_STRING", "not an Azure Storage connection string"]),
        (user.later("start", "hello", AZURE_COSMOS_CONNECTION_STRING="<unset>"), 3,
         ["AZURE_COSMOS_CONNECTION_STRING is not set", "services up --env"]),
        (user.later("start", "hello", CELERY_RESULT_BACKEND="nosuchbackend://"), 3,
         ["CELERY_RESULT_BACKEND", "nosuchbackend"]),
        (user.later("runs", REDIS_URL=f"secret@127.0.0.1:{port}"), 3, ["REDIS_URL", "not a Redis URL", "redis://"]),
        (user.later("runs", FLOWCRAFT_COSMOS_VERIFY_TLS="maybe"), 3, ["FLOWCRAFT_COSMOS_VERIFY_TLS", "'maybe'"]),
        (user.later("runs", FLOWCRAFT_STALL_SECONDS="soon"), 3, ["FLOWCRAFT_STALL_SECONDS", "'soon'", "default"]),
        # queue commands: a refused storage endpoint at once (not after the SDK's 85 s of retries)
        (user.later("queues", AZURE_STORAGE_CONNECTION_STRING=storage_on(port), timeout=20), 4,
         ["Azure Storage", f"127.0.0.1:{port}", "AZURE_STORAGE_CONNECTION_STRING", "connection refused"]),
        (user.later("dlq", "show", "flowcraft", AZURE_STORAGE_CONNECTION_STRING="<unset>"), 3,
         ["AZURE_STORAGE_CONNECTION_STRING is not set"]),
    ]
    said = set()
    for pending, code_, words in checks:
        result = pending.result()
        line = one_line(result)
        assert result.returncode == code_, (result.returncode, line)
        assert all(w in line for w in words), line
        assert "secret" not in line
        said.add(line)
    # docs/commands.md quotes these word for word
    page = (Path(__file__).resolve().parents[3] / "docs" / "commands.md").read_text(encoding="utf-8")
    quoted = [line for line in page.splitlines() if line.startswith("Error: ") and "127.0.0.1" not in line
              and "flows/" not in line]
    assert len(quoted) == 3 and set(quoted) <= said, set(quoted) - said
    debug = user.run("runs", "--debug", AZURE_COSMOS_CONNECTION_STRING="<unset>")
    assert "Traceback" in debug.stderr and debug.returncode != 0
    # a machine that only looks at runs needs no node modules, even if the setting names some
    assert user.run("runs", FLOWCRAFT_NODE_MODULES="nosuchmodule").returncode == 0


# -- commands that need no blueprints, with broken files around ---------------------------------


def test_run_commands_never_read_broken_or_huge_files(services_env: dict[str, str], database: str,
                                                      code: Path) -> None:
    add_junk(code / "flows")
    user = deployment(services_env, database, code, FLOWCRAFT_BLUEPRINTS="flows")
    started = user.run("start", "hello", "--context", '{"name": "ada"}')
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    status = user.run("status", run_id)
    assert status.returncode == 0, status.stderr
    lines = dict(line.split(None, 1) for line in status.stdout.splitlines())
    assert lines["run"] == run_id and lines["status"] == "running" and lines["blueprint"] == "hello (version 1)"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", lines["started"])  # local time, not epoch seconds
    listed = user.run("runs")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["RUN", "STATUS", "BLUEPRINT", "STARTED", "DURATION"]
    assert [r.split()[0] for r in rows] == [run_id]
    assert rows[0].index("running") == header.index("STATUS")
    assert [d["runId"] for d in json.loads(user.run("runs", "--json").stdout)] == [run_id]
    assert json.loads(user.run("status", run_id, "--json").stdout)["status"] == "running"
    refused = user.run("resume", run_id, "approve")
    assert refused.returncode == 1 and "is not awaiting" in one_line(refused)
    cancelled = user.run("cancel", run_id)
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"cancelled {run_id}", cancelled.stderr
    unknown = user.run("status", "no-such-run")
    assert unknown.returncode == 1 and "no-such-run" in one_line(unknown)


def test_waiting_with_no_worker_says_so_in_plain_lines(services_env: dict[str, str], database: str,
                                                       code: Path) -> None:
    user = deployment(services_env, database, code, FLOWCRAFT_BLUEPRINTS="flows")
    waited = user.run("start", "hello", "--wait", "--timeout", "7")
    assert waited.returncode == 5, waited.stderr
    assert "\r" not in waited.stderr
    assert max(len(line) for line in waited.stderr.splitlines()) < 400
    queue = user.env["FLOWCRAFT_DEFAULT_QUEUE"]
    assert "no worker of deployment" in waited.stderr and f"-Q {queue},{queue}-reconcile" in waited.stderr
    assert sum("running:" in line for line in waited.stderr.splitlines()) <= 2  # one per change, not per poll


def test_two_deployments_sharing_a_database_never_touch_each_others_runs(
        services_env: dict[str, str], database: str, code: Path) -> None:
    shared = {"FLOWCRAFT_BLUEPRINTS": "flows", "FLOWCRAFT_DEFAULT_QUEUE": names.unique_name("shared"),
              "FLOWCRAFT_KEY_PREFIX": names.unique_name("shared") + ":"}
    blue = deployment(services_env, database, code, FLOWCRAFT_QUEUE_PREFIX="blue-", **shared)
    green = deployment(services_env, database, code, FLOWCRAFT_QUEUE_PREFIX="green-", **shared)
    run_id = blue.run("start", "hello").stdout.strip()
    assert run_id
    assert green.run("runs", "--json").stdout.strip() == "[]"
    green_pass = json.loads(green.run("reconcile", "--stall-seconds", "0").stdout)
    assert green_pass["stalled"] == 0 and green_pass["republished"] == 0
    blue_pass = json.loads(blue.run("reconcile", "--stall-seconds", "0").stdout)
    assert blue_pass["stalled"] == 1 and blue_pass["republished"] == 0  # its start message is still queued
    queue = azure_queue_name(shared["FLOWCRAFT_DEFAULT_QUEUE"], "blue-")
    QueueClient.from_connection_string(services_env["AZURE_STORAGE_CONNECTION_STRING"], queue).clear_messages()
    lost_pass = json.loads(blue.run("reconcile", "--stall-seconds", "0").stdout)
    assert lost_pass["stalled"] == 1 and lost_pass["republished"] == 1  # the message is gone: re-sent
    assert json.loads(green.run("reconcile", "--stall-seconds", "0").stdout)["republished"] == 0
    assert [d["runId"] for d in json.loads(blue.run("runs", "--json").stdout)] == [run_id]


# -- workers ----------------------------------------------------------------------------------------


def test_a_worker_with_an_unreadable_blueprint_refuses_to_start(services_env: dict[str, str], database: str,
                                                                code: Path) -> None:
    add_junk(code / "flows")
    worker = deployment(services_env, database, code, FLOWCRAFT_BLUEPRINTS="flows", FLOWCRAFT_NODE_MODULES="hellonodes")
    with WorkerGroup(worker.env, code / "logs", cwd=code) as group:
        process = group.worker(concurrency=1)
        assert process.wait(timeout=90) == 3
        log = group.logs[0].read_text(errors="replace")
    [line] = [line for line in log.splitlines() if line.strip()]  # every bad file in one line
    assert line.startswith("flowcraft: cannot start: FLOWCRAFT_BLUEPRINTS: flows/deep.json: ")
    assert "flows/huge.json: MALFORMED_BLUEPRINT" in line and "flows/package.json: MALFORMED_BLUEPRINT: $.nodes" in line


def test_a_worker_with_a_wrong_service_setting_refuses_to_start_naming_it(
        services_env: dict[str, str], database: str, code: Path) -> None:
    wrong = {"REDIS_URL": ("127.0.0.1:6379", "not a Redis URL"),
             "AZURE_STORAGE_CONNECTION_STRING": ("", "AZURE_STORAGE_CONNECTION_STRING is not set"),
             "AZURE_COSMOS_CONNECTION_STRING": ("AccountKey=x", "AccountEndpoint"),
             "FLOWCRAFT_STALL_SECONDS": ("soon", "'soon' is not a number")}
    groups = []
    for setting, (value, _) in wrong.items():
        env = deployment(services_env, database, code, FLOWCRAFT_BLUEPRINTS="flows",
                         FLOWCRAFT_NODE_MODULES="hellonodes", **{setting: value}).env
        group = WorkerGroup(env, code / "logs" / setting, cwd=code)
        groups.append((setting, group, group.worker(concurrency=1)))
    for setting, group, process in groups:
        with group:
            assert process.wait(timeout=90) == 3, setting
            lines = [line for line in group.logs[0].read_text(errors="replace").splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("flowcraft: cannot start: "), lines
        assert setting in lines[0] and wrong[setting][1] in lines[0], lines[0]
    # a service that does not answer is not a wrong setting: said once, up front, and the worker goes on
    port = free_port()
    env = deployment(services_env, database, code, FLOWCRAFT_BLUEPRINTS="flows", FLOWCRAFT_NODE_MODULES="hellonodes",
                     REDIS_URL=f"redis://127.0.0.1:{port}/0").env
    with WorkerGroup(env, code / "logs" / "redis-down", cwd=code) as group:
        process = group.worker(concurrency=1)
        first = wait_for(lambda: group.logs[0].read_text(errors="replace").split("\n", 1)[0] or None, 60,
                         "the worker's first log line")
        assert first == (f"flowcraft: cannot reach Redis at redis://127.0.0.1:{port}/0 (REDIS_URL): connection "
                         "refused; start Redis (`flowcraft-celery services up`) or point REDIS_URL at it "
                         "(the worker keeps retrying)")
        assert process.poll() is None


def test_a_client_without_the_workers_code_starts_and_follows_runs(services_env: dict[str, str], database: str,
                                                                   code: Path, tmp_path_factory: pytest.TempPathFactory
                                                                   ) -> None:
    worker = deployment(services_env, database, code, FLOWCRAFT_BLUEPRINTS="flows", FLOWCRAFT_NODE_MODULES="hellonodes")
    elsewhere = tmp_path_factory.mktemp("client")
    client = Deployment({**worker.env, "FLOWCRAFT_BLUEPRINTS": "<unset>", "FLOWCRAFT_NODE_MODULES": "<unset>"},
                        elsewhere)
    assert "no worker of deployment" in client.run("blueprints").stdout
    with WorkerGroup(worker.env, code / "logs", cwd=code) as group:
        group.worker(concurrency=2)
        group.wait_ready(90)
        catalog = json.loads(client.run("blueprints", "--json").stdout)
        entry = catalog["blueprints"]["hello"]
        assert (entry["version"], entry["uses"]) == ("1", ["greet", "shout"]) and len(entry["fingerprint"]) == 16
        [(name, info)] = catalog["workers"].items()
        queue = worker.env["FLOWCRAFT_DEFAULT_QUEUE"]
        assert {"greet", "shout"} <= set(info["nodes"]) and info["queues"] == [queue, f"{queue}-reconcile"]
        table = client.run("blueprints").stdout
        assert "hello" in table and "greet, shout" in table and name in table
        waited = client.run("start", "hello", "--context", '{"name": "lee"}', "--wait", "--timeout", "90")
        assert waited.returncode == 0, waited.stderr
        assert json.loads(waited.stdout)["context"]["shout"] == "HELLO LEE"
        script = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT], env=client.environment(), cwd=elsewhere,
                                capture_output=True, text=True, timeout=120, check=False)
        assert script.returncode == 0, script.stderr
        outcome = json.loads(script.stdout)
        assert (outcome["status"], outcome["shout"]) == ("completed", "HELLO ADA")
        assert "differs from the one the workers run" in outcome["refused"]
        (elsewhere / "extra.json").write_text(json.dumps(
            {"id": "extra", "nodes": [{"id": "a", "uses": "nobody-runs-this"}], "edges": []}), encoding="utf-8")
        refused = client.run("start", "extra", FLOWCRAFT_BLUEPRINTS="extra.json")  # validated against the workers
        assert refused.returncode == 1 and refused.stderr.startswith("Error: blueprint 'extra' is invalid")
        assert "MISSING_NODE_IMPLEMENTATION" in refused.stderr and "nobody-runs-this" in refused.stderr
        unknown = client.run("start", "nope")
        assert unknown.returncode == 1
        assert "published: hello" in one_line(unknown) and "FLOWCRAFT_BLUEPRINTS" in one_line(unknown)
        live = live_wait(client)
    assert "\r" in live and "completed" in live
    assert json.loads(client.run("blueprints", "--json").stdout)["workers"] == {}


def live_wait(client: Deployment) -> str:
    """`start --wait` with its stderr on a terminal: what the terminal received."""
    leader, follower = pty.openpty()
    env = client.environment()
    process = subprocess.Popen([sys.executable, "-m", "flowcraft_celery.cli", "start", "hello", "--wait"], env=env,
                               cwd=client.folder, stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    received = b""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        received += chunk
    process.wait(timeout=30)
    os.close(leader)
    assert process.returncode == 0
    return received.decode(errors="replace")
