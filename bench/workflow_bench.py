"""Workflow benchmark (issues 5 and 8): no-op workflow graphs on real workers, one Celery task per node
(the default) and with the opt-ins (inline chain hops, packed fan-outs), against Celery canvas on
Redis and the raw round trip of Azure Queue Storage; idle pick-up latency and idle cost of the
transport; requests and worker CPU time per node; long nodes spread over idle workers; a profile.

    .venv/bin/python -W ignore bench/workflow_bench.py            # chain 20, fan 100, 10 runs of fan 10
    .venv/bin/python -W ignore bench/workflow_bench.py --quick    # a small smoke run

Needs the dev services (Azurite queue, cosmosdb-server, `redis-server` on PATH); the emulators'
env vars default to `flowcraft-celery services up`'s. Redis commands are counted with MONITOR on a
private `redis-server` this script starts (and stops), so nothing else's traffic is counted (nor the
connections on which the benchmark's long and pick-up nodes stamp their times), and are shown by
name and key family per node (a script by its name); Azure queue and Cosmos requests are counted
in every worker process (see bench/workflow_nodes.py); worker CPU time is read from the OS (psutil)
for every process of each worker's tree. The raw round trip and ceiling are measured three times
(before, between and after the workflow scenarios) and their medians are the references of the ratios.
Prints one table, the ratios, PASS/MISS per target and where one node's time goes; exits 0 on a miss.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import importlib
import itertools
import json
import math
import os
import pstats
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC
from pathlib import Path
from typing import Any

import psutil
import redis
from azure.storage.queue import QueueClient, QueueServiceClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.transport_bench import raw_ceiling  # noqa: E402
from flowcraft_celery.devtools import devservices  # noqa: E402
from flowcraft_celery.stores.cosmos_client import request_counts  # noqa: E402
from transports.azurequeue.stats import STATS  # noqa: E402

#: Commands the benchmark itself sends to its private Redis to observe it.
OBSERVER_COMMANDS = frozenset({"info", "config", "time", "ping"})
WORKERS = 2
#: Each pool's processes (`-c`), of the Flowcraft and the canvas workers alike.
CONCURRENCY = 2
TARGET_HOP_RATIO = 1.5
TARGET_FAN_CEILING = 1.0
TARGET_RUNS_CEILING = 0.6
TARGET_CANVAS_SHARE = 0.5
TARGET_CPU_VS_CANVAS = 2.0
TARGET_LONG_MAKESPAN = 1.2
TARGET_QUEUE_PER_NODE_CHAIN = 3.2
TARGET_QUEUE_PER_NODE_FAN = 2.2
TARGET_COSMOS_PER_NODE = 1.5
TARGET_REDIS_PER_NODE = 10.0
TARGET_REDIS_PER_ARRIVAL = 2.0
TARGET_PICKUP_P50 = 0.1
TARGET_IDLE_PER_QUEUE = 0.2


@dataclass(frozen=True)
class Mode:
    """How the Flowcraft workers run a workflow: the environment that selects it."""

    system: str
    title: str
    env: dict[str, str]


MODES = (
    Mode("flowcraft", "one Celery task per node (the default)",
         {"FLOWCRAFT_INLINE_DEPTH": "0", "FLOWCRAFT_FANOUT_GROUP": "1"}),
    Mode("flowcraft+opt-ins", "opt-ins: inline chain hops (depth 8), fan-out packs of 4",
         {"FLOWCRAFT_INLINE_DEPTH": "8", "FLOWCRAFT_FANOUT_GROUP": "4"}),
)


@dataclass
class Figures:
    """What one scenario on one system measured."""

    scenario: str
    system: str
    nodes: int
    seconds: float
    hops: list[float]
    redis: int
    arrivals: int
    join_commands: int
    queue: int | None = None
    cosmos: int | None = None
    kinds: Counter[str] | None = None
    #: Seconds from the first publish to the first node's finish, and the longest wait between
    #: two finishes (a stall shows here, not in the hop percentiles).
    first: float | None = None
    longest_gap: float | None = None
    #: CPU seconds (user + system) of every worker process during the scenario.
    cpu: float | None = None
    #: Redis commands by name and key family (`EVALSHA ledger.enter`, `GET lock:{}`).
    families: Counter[str] | None = None
    #: Seconds the request and command counts cover, and the CPU time's (flowcraft's).
    window: float = 0.0
    cpu_window: float = 0.0
    #: Seconds the client's `start` calls took (flowcraft's; a slow start shows here, not in the workers).
    starting: float | None = None

    def net_of(self, idle: Idle) -> Figures:
        """These figures less what the idle workers send and spend on their own in as long (their
        polls, heartbeats and keep-alives: a cost per second, not per node)."""
        return replace(self, queue=max(0, round((self.queue or 0) - idle.queue_per_s * self.window)),
                       redis=max(0, round(self.redis - idle.redis_per_s * self.window)),
                       cpu=None if self.cpu is None else max(0.0, self.cpu - idle.cpu_per_s * self.cpu_window))

    @property
    def nodes_per_s(self) -> float:
        """Node executions per second, first publish to last finish."""
        return self.nodes / self.seconds

    def row(self) -> str:
        """The scenario's line of the table."""
        def per(count: int | None, n: int) -> str:
            return "-" if count is None or n == 0 else f"{count / n:.2f}"

        hop = f"{_ms(_pct(self.hops, 50)):>8} {_ms(_pct(self.hops, 95)):>8}" if self.hops else f"{'-':>8} {'-':>8}"
        return (f"{self.scenario:<24} {self.system:<18} {self.nodes:>5} {self.seconds:7.2f} {self.nodes_per_s:8.1f} "
                f"{hop} {per(self.queue, self.nodes):>7} {per(self.cosmos, self.nodes):>7} "
                f"{per(self.redis, self.nodes):>7} {per(self.join_commands, self.arrivals):>9} "
                f"{'-' if self.cpu is None else _ms(self.cpu / self.nodes):>8}")


HEADER = (f"{'scenario':<24} {'system':<18} {'nodes':>5} {'wall s':>7} {'nodes/s':>8} {'hop p50':>8} "
          f"{'hop p95':>8} {'queue/n':>7} {'cosmos/n':>7} {'redis/n':>7} {'redis/arr':>9} {'cpu/n':>8}")


@dataclass(frozen=True)
class Raw:
    """One measurement of the raw queue: sequential round trips and the 8-thread send and drain rates."""

    rtt: list[float]
    send: float
    drain: float

    @property
    def ceiling(self) -> float:
        """Whole message lives per second one Azurite serves: 1/(1/send + 1/drain)."""
        return 1 / (1 / self.send + 1 / self.drain)

    def text(self) -> str:
        """One line of figures."""
        return (f"round trip p50 {_ms(statistics.median(self.rtt))}, p95 {_ms(_pct(self.rtt, 95))}; send "
                f"{self.send:.0f}/s, receive(32)+delete {self.drain:.0f}/s, ceiling {self.ceiling:.0f} msg/s")


def raw_queue(conn_str: str, round_trips: int, messages: int) -> Raw:
    """Measure the raw round trip and ceiling of Azurite now."""
    rtt = raw_round_trip(conn_str, round_trips)
    send, drain = raw_ceiling(messages)
    return Raw(rtt, send, drain)


def tree_cpu(pids: Iterable[int]) -> float:
    """CPU seconds (user + system) used so far by these processes and all their descendants, the
    reaped ones included (as the OS reports them to their parent)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system + times.children_user + times.children_system
    return total


def _pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """A `redis-server` of the benchmark's own on a free port, stopped by PID."""

    def __init__(self, log: Path) -> None:
        self.port = _free_port()
        with log.open("wb") as out:
            self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no"],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server did not start; see {log}")
            time.sleep(0.05)
        client.close()

    def url(self, db: int) -> str:
        """The URL of one of its databases."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        """Stop the server (TERM, then KILL)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Monitor:
    """Every command clients send to a Redis server (MONITOR), minus those run inside Lua scripts."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.sendall(b"MONITOR\r\n")
        self._buffer = bytearray()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while chunk := self._sock.recv(1 << 16):
            with self._lock:
                self._buffer += chunk

    def take(self) -> list[str]:
        """Top-level command lines received since the last call (a line cut short stays for the next)."""
        time.sleep(0.2)
        with self._lock:
            data, cut = bytes(self._buffer), self._buffer.rfind(b"\r\n") + 2
            del self._buffer[:cut]
        lines = data[:cut].decode(errors="replace").split("\r\n")
        return [line for line in lines if " [" in line and " lua]" not in line.split('"', 1)[0]
                and _command(line) not in OBSERVER_COMMANDS]

    def close(self) -> None:
        """Drop the connection (the reader thread ends)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def _command(line: str) -> str:
    """The command name of a MONITOR line."""
    parts = line.split('"', 2)
    return parts[1].lower() if len(parts) > 1 else ""


def _client_of(line: str) -> str:
    """The client address of a MONITOR line (`[db addr:port]`)."""
    return line.split("[", 1)[-1].split("]", 1)[0].split(" ")[-1]


def without_connections_of(lines: list[str], keys: Iterable[str]) -> list[str]:
    """The lines of every connection that never touched `keys` (the benchmark nodes' own stamps,
    written on connections of their own, are not the workers' traffic)."""
    marks = tuple(f'"{key}"' for key in keys)
    own = {_client_of(line) for line in lines if any(mark in line for mark in marks)}
    return [line for line in lines if _client_of(line) not in own]


#: Modules whose module-level Lua sources name the scripts EVALSHA runs (by their SHA1).
SCRIPT_MODULES = ("flowcraft_celery.stores.ledger", "flowcraft_celery.stores.redis", "flowcraft_celery.stores.due",
                  "flowcraft_celery.stores.timeline", "flowcraft_celery.distributed.runs.delayed",
                  "transports.azurequeue.bundles", "transports.azurequeue.wakeup", "transports.azurequeue.transient")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
_VARIABLE = re.compile(r"\{[^}]*\}|[0-9a-f]{8,}(?:-[0-9a-f]{4,})*|\d{3,}")


def script_names() -> dict[str, str]:
    """`module.name` of every Lua script of the project, by SHA1 (`ledger.enter`, `wakeup.push`)."""
    names = {}
    for module_name in SCRIPT_MODULES:
        module = importlib.import_module(module_name)
        for attr, value in vars(module).items():
            if isinstance(value, str) and "redis.call" in value:
                sha = hashlib.sha1(value.encode()).hexdigest()
                names[sha] = f"{module_name.rsplit('.', 1)[1]}.{attr.strip('_').lower()}"
    return names


def command_family(line: str, prefix: str, scripts: dict[str, str]) -> str:
    """A MONITOR line as `NAME family`: a script's name for EVALSHA, else the first key with the
    benchmark's prefix dropped and ids, hash tags and numbers as `*` / `{}`."""
    args = _ARG.findall(line)
    if not args:
        return "?"
    name = args[0].upper()
    if name in ("EVALSHA", "EVAL") and len(args) > 1:
        return f"{name} {scripts.get(args[1], args[1][:8])}"
    if name in ("CLIENT", "SCRIPT", "CONFIG", "COMMAND") and len(args) > 1:
        return f"{name} {args[1].upper()}"
    if len(args) < 2 or name in ("SELECT", "MULTI", "EXEC", "PING", "HELLO", "AUTH"):
        return name
    key = args[1].split(prefix, 1)[-1] if prefix else args[1]
    return f"{name} {_VARIABLE.sub(lambda m: '{}' if m.group().startswith('{') else '*', key)}"


def raw_round_trip(conn_str: str, n: int) -> list[float]:
    """Seconds of n sequential send -> receive -> delete round trips with the plain SDK."""
    queue = QueueClient.from_connection_string(conn_str, f"wfb-rtt-{uuid.uuid4().hex[:8]}")
    queue.create_queue()
    times = []
    try:
        for _ in range(n + 3):
            started = time.perf_counter()
            queue.send_message("x" * 600)
            message = None
            while message is None:
                message = queue.receive_message()
            queue.delete_message(message)
            times.append(time.perf_counter() - started)
    finally:
        queue.delete_queue()
    return times[3:]


def worker_counts(folder: Path) -> tuple[int, int]:
    """Queue and Cosmos requests made so far by every worker process (their latest dumps)."""
    queue = cosmos = 0
    for path in folder.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
            queue += int(data["queue"])
            cosmos += int(data["cosmos"])
    return queue, cosmos


def worker_kinds(folder: Path) -> Counter[str]:
    """Queue and Cosmos requests made so far by every worker process, by kind (`queue.send`,
    `cosmos.docs:create`, ...)."""
    kinds: Counter[str] = Counter()
    for path in folder.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            kinds.update({str(k): int(v) for k, v in json.loads(path.read_text()).get("kinds", {}).items()})
    return kinds


def _own_kinds() -> Counter[str]:
    """This process's queue and Cosmos requests by kind."""
    kinds = Counter({k: v for k, v in STATS.snapshot().items() if k.startswith("queue.")})
    kinds.update({f"cosmos.{k}": v for k, v in request_counts().items()})
    return kinds


@dataclass
class Bench:
    """What the Flowcraft scenarios share: the client app, Redis, the monitor and the counter folder."""

    client: Any
    redis: redis.Redis
    monitor: Monitor
    stats_dir: Path
    prefix: str
    timeout: float
    pids: list[int]
    system: str = "flowcraft"
    scripts: dict[str, str] = field(default_factory=script_names)

    def scenario(self, name: str, blueprint_id: str, runs: int) -> Figures:
        """Start `runs` runs of a blueprint at once, wait for all; count and time them."""
        from bench import workflow_nodes

        self.monitor.take()
        opened = time.monotonic()
        own_keys = (workflow_nodes.LONG_KEY, workflow_nodes.PICKUP_KEY)
        workers_before, kinds_before = worker_counts(self.stats_dir), worker_kinds(self.stats_dir)
        queue_before, cosmos_before = STATS.total("queue"), sum(request_counts().values())
        own_kinds_before = _own_kinds()
        cpu_before = tree_cpu(self.pids)
        seconds, micros = self.redis.time()  # the clock starts just before the first start, as canvas's
        started = seconds + micros / 1e6
        begun = time.perf_counter()
        handles = [self.client.start(blueprint_id) for _ in range(runs)]
        starting = time.perf_counter() - begun
        own_kinds = _own_kinds() - own_kinds_before
        own_queue = STATS.total("queue") - queue_before
        own_cosmos = sum(request_counts().values()) - cosmos_before
        for handle in handles:
            doc = handle.wait(self.timeout)
            if doc.get("status") != "completed":
                raise RuntimeError(f"run {handle.run_id} ended {doc.get('status')}: {doc.get('errors')}")
        cpu = tree_cpu(self.pids) - cpu_before
        cpu_window = time.monotonic() - opened
        time.sleep(2 * workflow_nodes.STATS_PERIOD + 0.1)
        lines = without_connections_of(self.monitor.take(), own_keys)
        window = time.monotonic() - opened
        workers_after = worker_counts(self.stats_dir)
        kinds = worker_kinds(self.stats_dir) - kinds_before + own_kinds
        graph = self.client.runtime.blueprints[blueprint_id]
        finished = [self.client.runtime.ledger.finish_times(h.run_id) for h in handles]
        hops = []
        if blueprint_id == workflow_nodes.CHAIN_ID:
            hops = [b[1] - a[1] for run in finished for a, b in itertools.pairwise(run)]
        marks = [f"{self.prefix}{kind}:{{{h.run_id}:" for h in handles for kind in ("join", "claim")]
        joins = sum(1 for line in lines if any(mark in line for mark in marks))
        width = sum(1 for e in graph.edges if e.target == "join")
        times = sorted(t for run in finished for _, t in run)
        families = Counter(command_family(line, self.prefix, self.scripts) for line in lines)
        return Figures(name, self.system, len(times), times[-1] - started,
                       hops, len(lines), runs * width, joins,
                       workers_after[0] - workers_before[0] + own_queue,
                       workers_after[1] - workers_before[1] + own_cosmos, kinds,
                       times[0] - started, max((b - a for a, b in itertools.pairwise(times)), default=0.0), cpu,
                       families, window, cpu_window, starting)


@dataclass(frozen=True)
class Idle:
    """What idle workers send and spend on their own, per second."""

    queue_per_s: float
    redis_per_s: float
    cpu_per_s: float
    #: Their Azure queue requests by kind over the window.
    kinds: Counter[str]


def idle_cost(stats_dir: Path, seconds: float, monitor: Monitor, pids: list[int]) -> Idle:
    """Azure queue requests, Redis commands and CPU time per second of the idle workers over `seconds`."""
    before, kinds_before = worker_counts(stats_dir)[0], worker_kinds(stats_dir)
    monitor.take()
    cpu_before, opened = tree_cpu(pids), time.monotonic()
    time.sleep(seconds)
    cpu, cpu_window = tree_cpu(pids) - cpu_before, time.monotonic() - opened
    commands, window = len(monitor.take()), time.monotonic() - opened
    after, kinds_after = worker_counts(stats_dir)[0], worker_kinds(stats_dir)
    kinds = kinds_after - kinds_before
    return Idle((after - before) / seconds, commands / window, cpu / cpu_window,
                Counter({k: n for k, n in kinds.items() if k.startswith("queue.")}))


def pickup_latencies(publish: Callable[[], float], stamps: redis.Redis, key: str, samples: int,
                     gap: float, timeout: float) -> list[float]:
    """Seconds from a publish to an idle worker starting the task, `samples` times `gap` s apart.

    `publish` sends one task message and returns the time it was sent; the worker stamps the time
    it starts that task onto the Redis list `key` (same machine, same clock)."""
    latencies = []
    stamps.delete(key)
    for _ in range(samples):
        time.sleep(gap)
        sent = publish()
        popped = stamps.blpop([key], timeout=timeout)
        if popped is None:
            raise RuntimeError(f"no worker started the pick-up task within {timeout} s")
        latencies.append(max(0.0, float(popped[1]) - sent))
    return latencies


def delayed_lateness(prefix: str, redis_url: str, samples: int, delay: float) -> list[float]:
    """Seconds between due time and delivery of messages sent `delay` s ahead (an ETA, like a
    countdown or retry), on a plain Kombu consumer of the transport with Redis wake-ups."""
    from datetime import UTC, datetime, timedelta

    from kombu import Connection

    lateness = []
    options = {"queue_name_prefix": prefix, "redis_url": redis_url}
    with Connection("azurequeue://", transport_options=options) as conn:
        queue = conn.SimpleQueue("delayed")
        queue.put("warm-up")
        queue.get(timeout=30).ack()
        for _ in range(samples):
            due = datetime.now(UTC) + timedelta(seconds=delay)
            queue.put("due", headers={"eta": due.isoformat()})
            message = queue.get(timeout=delay + 30)
            lateness.append((datetime.now(UTC) - due).total_seconds())
            message.ack()
        queue.queue.delete()
    return lateness


def _results(result: Any) -> list[Any]:
    """Every task result of a chain or chord result (following parents and group members)."""
    from celery.result import GroupResult

    found, todo = [], [result]
    while todo:
        item = todo.pop()
        if isinstance(item, GroupResult):
            todo.extend(item.results)
        else:
            found.append(item)
        if item.parent is not None:
            todo.append(item.parent)
    return found


def canvas_scenario(name: str, build: Callable[[], Any], runs: int, arrivals: int, monitor: Monitor,
                    timeout: float, hops: bool, pids: list[int]) -> Figures:
    """Apply `runs` canvases at once, wait for all; count Redis commands, time from the results."""
    monitor.take()
    cpu_before = tree_cpu(pids)
    started = time.time()
    results = [build().apply_async() for _ in range(runs)]
    for result in results:
        result.get(timeout=timeout, disable_sync_subtasks=False)
    cpu = tree_cpu(pids) - cpu_before
    lines = monitor.take()
    done = []
    for result in results:
        stamps = []
        for item in _results(result):
            when = item.date_done
            item.backend.result_consumer.cancel_for(item.id)  # unsubscribe now, not at exit without Redis
            stamps.append((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())
        done.append(sorted(stamps))
    groups = [r.parent.id for r in results if r.parent is not None and not hops]
    joins = sum(1 for line in lines if any(g in line for g in groups))
    gaps = [b - a for run in done for a, b in itertools.pairwise(run)] if hops else []
    return Figures(name, "canvas on Redis", sum(len(d) for d in done), max(max(d) for d in done) - started,
                   gaps, len(lines), runs * arrivals if not hops else 0, joins, cpu=cpu)


@contextlib.contextmanager
def canvas_workers(env: dict[str, str], log_dir: Path, count: int) -> Iterator[list[int]]:
    """`count` plain Celery workers (prefork -c 2) of bench/workflow_canvas_app.py, stopped by PID;
    yields their main processes' PIDs."""
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for i in range(count):
            log = log_dir / f"canvas{i}.log"
            with log.open("wb") as out:
                procs.append((subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "bench.workflow_canvas_app", "worker", "-l", "INFO",
                     "-n", f"canvas{i}-{uuid.uuid4().hex[:6]}@%h", "-c", str(CONCURRENCY), "--without-gossip",
                     "--without-mingle"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True), log))
        deadline = time.monotonic() + 60
        for proc, log in procs:
            while b"ready." not in log.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"canvas worker did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield [proc.pid for proc, _ in procs]
    finally:
        for proc, _ in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _ in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@dataclass
class Profile:
    """One worker's node executions profiled in-process."""

    nodes: int
    total: float
    buckets: dict[str, float]
    top: list[tuple[str, float, float]]


def _file_is(*suffixes: str) -> Callable[[tuple[str, int, str]], bool]:
    return lambda func: func[0].replace(os.sep, "/").endswith(suffixes)


def _bucket(raw: dict[Any, Any], inside: Callable[[tuple[str, int, str]], bool]) -> float:
    """Cumulative seconds spent in functions matching `inside`, entered from functions that do not."""
    return sum(ct for func, (_, _, _, _, callers) in raw.items() if inside(func)
               for caller, (_, _, _, ct) in callers.items() if not inside(caller))


def profile_nodes(client: Any, blueprint_id: str) -> Profile:
    """Run one run's node tasks in this process (workers stopped) under cProfile."""
    from flowcraft_celery.distributed.runs.publishing import node_task_name

    rt = client.runtime
    run = client.start(blueprint_id)
    profiler = cProfile.Profile()
    nodes = 0
    while pending := rt.ledger.pending(run.run_id):
        for message in pending.values():
            uses = rt.blueprints[blueprint_id].nodes[0].uses
            profiler.enable()
            result = client.app.tasks[node_task_name(uses)].apply(kwargs={"msg": message})
            profiler.disable()
            if result.failed():
                raise RuntimeError(f"profiled node {message['node']} failed: {result.result!r}")
            nodes += 1
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = float(stats.total_tt)  # type: ignore[attr-defined]
    buckets = {
        "Cosmos (stores/cosmos.py)": _bucket(raw, _file_is("flowcraft_celery/stores/cosmos.py")),
        "Redis (ledger, coordination)": _bucket(raw, _file_is("stores/ledger.py", "stores/redis.py")),
        "queue publish (send_task)": _bucket(raw, lambda f: f[2] == "send_task"),
    }
    buckets["engine, Celery and the rest"] = total - sum(buckets.values())
    top = sorted(((f"{Path(f[0]).parent.name}/{Path(f[0]).name}:{f[1]}({f[2]})", v[3], v[1])
                  for f, v in raw.items() if "/celery/app/trace.py" not in f[0] and f[0] != "~"),
                 key=lambda item: -item[1])[:15]
    return Profile(nodes, total, buckets, [(name, ct / nodes, calls / nodes) for name, ct, calls in top])


def _kinds_text(kinds: Counter[str], per: int = 0) -> str:
    """`send 1.00, receive 0.31, ...`: requests by kind, per `per` (0: plain counts)."""
    if not kinds:
        return "none"
    return ", ".join(f"{kind.partition('.')[2]} {n / per:.2f}" if per else f"{kind.partition('.')[2]} {n}"
                     for kind, n in kinds.most_common())


def _families_text(families: Counter[str], per: int) -> str:
    """`EVALSHA ledger.enter 1.00, GET lock:{} 0.50, ...`: commands per node, most first (under 0.05
    per node summed as `other`)."""
    shown = [(family, n) for family, n in families.most_common() if n / per >= 0.05]
    rest = sum(families.values()) - sum(n for _, n in shown)
    parts = [f"{family} {n / per:.2f}" for family, n in shown]
    return ", ".join([*parts, f"other {rest / per:.2f}"] if rest else parts) or "none"


def _spread(entries: list[Any]) -> list[tuple[int, float, float]]:
    """The long nodes' `<worker pid> <start> <end>` records, by start time."""
    rows = []
    for entry in entries:
        pid, start, end = (entry.decode() if isinstance(entry, bytes) else str(entry)).split()
        rows.append((int(pid), float(start), float(end)))
    return sorted(rows, key=lambda row: row[1])


def _spread_text(rows: list[tuple[int, float, float]]) -> str:
    """Which worker ran each long node and when it started, relative to the first start."""
    if not rows:
        return "no records"
    first = rows[0][1]
    workers = sorted({pid for pid, _, _ in rows})
    return "; ".join(f"worker {n + 1} started " + ", ".join(f"+{start - first:.2f}s"
                                                          for p, start, _ in rows if p == pid)
                     for n, pid in enumerate(workers))


def _load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _delete_queues(conn_str: str, prefix: str) -> None:
    """Remove the Azure queues this run created."""
    service = QueueServiceClient.from_connection_string(conn_str)
    for queue in service.list_queues(name_starts_with=prefix):
        with contextlib.suppress(Exception):
            service.delete_queue(queue.name)


def main() -> None:
    """Measure everything in one run and print the tables, ratios, targets and profile."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small graphs and samples: a smoke run")
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--fan", type=int, default=100)
    parser.add_argument("--runs", type=int, default=10, help="concurrent runs of the small fan")
    parser.add_argument("--run-fan", type=int, default=10, help="width of each concurrent run's fan")
    parser.add_argument("--round-trips", type=int, default=50)
    parser.add_argument("--ceiling-messages", type=int, default=1000)
    parser.add_argument("--pickups", type=int, default=12, help="idle pick-up samples per system")
    parser.add_argument("--pickup-gap", type=float, default=5.0, help="idle seconds before each pick-up sample")
    parser.add_argument("--idle-window", type=float, default=30.0, help="seconds of idle workers whose requests count")
    parser.add_argument("--delayed", type=int, default=8, help="delayed-message samples (due 1.5 s after sending)")
    parser.add_argument("--long-width", type=int, default=5, help="width of the fan-out of long nodes")
    parser.add_argument("--long-seconds", type=float, default=3.0, help="seconds each long node sleeps")
    args = parser.parse_args()
    if args.quick:
        args.chain, args.fan, args.runs, args.run_fan, args.round_trips, args.ceiling_messages = 5, 10, 3, 3, 10, 100
        args.pickups, args.pickup_gap, args.idle_window, args.delayed, args.long_seconds = 3, 0.5, 3.0, 2, 1.0
    timeout = 60.0 if args.quick else 600.0
    for name, value in devservices.env_vars(devservices.Ports.from_env()).items():
        os.environ.setdefault(name, value)
    conn_str = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    tag = f"wfb-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="workflow-bench-"))

    raws = [raw_queue(conn_str, args.round_trips, args.ceiling_messages)]

    private = PrivateRedis(work / "redis.log")
    monitor = Monitor(private.port)
    env = {"REDIS_URL": private.url(0), "FLOWCRAFT_DEFAULT_QUEUE": tag, "FLOWCRAFT_KEY_PREFIX": f"{tag}:",
           "FLOWCRAFT_COSMOS_DATABASE": tag, "FLOWCRAFT_NODE_MODULES": "bench.workflow_nodes",
           "FLOWCRAFT_BLUEPRINTS": "bench.workflow_nodes:blueprints", "FLOWCRAFT_TASK_EVENTS": "false",
           "BENCH_CHAIN": str(args.chain), "BENCH_FAN": str(args.fan),
           "BENCH_RUN_FAN": str(args.run_fan), "BENCH_LONG_WIDTH": str(args.long_width),
           "BENCH_LONG_SECONDS": str(args.long_seconds), "PYTHONPATH": str(ROOT),
           "BENCH_CANVAS_REDIS": private.url(1), "BENCH_CANVAS_QUEUE": f"{tag}-canvas"}
    os.environ.update(env)
    figures: list[Figures] = []
    late = delayed_lateness(f"{tag}-", private.url(2), args.delayed, 1.5)
    pickups: dict[str, list[float]] = {}
    spreads: dict[str, list[tuple[int, float, float]]] = {}
    idle, consumed = Idle(0.0, 0.0, 0.0, Counter()), WORKERS
    chain_name, fan_name = f"chain of {args.chain}", f"fan 1->{args.fan}->1"
    runs_name = f"{args.runs} runs of 1->{args.run_fan}->1"
    long_name = f"long fan 1->{args.long_width}->1"
    try:
        from celery import chain, chord
        from celery.signals import after_task_publish

        from bench import workflow_canvas_app, workflow_nodes
        from flowcraft_celery.devtools.workers import WorkerGroup
        from flowcraft_celery.distributed.client import Client

        published: list[float] = []
        after_task_publish.connect(lambda **_: published.append(time.time()), weak=False)
        client = Client()
        stamps = redis.Redis.from_url(private.url(0))
        for mode in MODES:
            stats_dir = work / f"stats-{len(figures)}"
            stats_dir.mkdir()
            mode_env = {**env, **mode.env, "BENCH_STATS_DIR": str(stats_dir)}
            with WorkerGroup(mode_env, work / f"workers-{len(figures)}", cwd=ROOT) as group:
                pids = [group.worker(concurrency=CONCURRENCY).pid for _ in range(WORKERS)]
                group.wait_ready(90)
                bench = Bench(client, stamps, monitor, stats_dir, f"{tag}:", timeout, pids, mode.system)
                bench.scenario("warm-up", workflow_nodes.RUN_FAN_ID, 2)
                figures.append(bench.scenario(chain_name, workflow_nodes.CHAIN_ID, 1))
                figures.append(bench.scenario(fan_name, workflow_nodes.FAN_ID, 1))
                figures.append(bench.scenario(runs_name, workflow_nodes.RUN_FAN_ID, args.runs))
                if mode is MODES[0]:
                    time.sleep(1.0)  # both workers idle
                    stamps.delete(workflow_nodes.LONG_KEY)
                    figures.append(bench.scenario(long_name, workflow_nodes.LONG_ID, 1))
                    spreads[mode.system] = _spread(stamps.lrange(workflow_nodes.LONG_KEY, 0, -1))
                    consumed = WORKERS * len(client.app.conf.task_queues or ()) or WORKERS
                    idle = idle_cost(stats_dir, args.idle_window, monitor, pids)

                    def start_one() -> float:
                        published.clear()
                        client.start(workflow_nodes.PICKUP_ID)
                        return published[-1]

                    pickups[mode.system] = pickup_latencies(start_one, stamps, workflow_nodes.PICKUP_KEY,
                                                            args.pickups, args.pickup_gap, timeout)
        profile = profile_nodes(client, workflow_nodes.RUN_FAN_ID)
        raws.append(raw_queue(conn_str, args.round_trips, args.ceiling_messages))

        noop, sleep = workflow_canvas_app.noop, workflow_canvas_app.sleep
        with canvas_workers({**os.environ, **env}, work, WORKERS) as canvas_pids:
            canvas_scenario("warm-up", lambda: chord([noop.s(i) for i in range(args.run_fan)], noop.s()), 2,
                            args.run_fan, monitor, timeout, False, canvas_pids)
            figures.append(canvas_scenario(
                chain_name, lambda: chain(noop.s(0), *(noop.s() for _ in range(args.chain - 1))), 1, 0,
                monitor, timeout, True, canvas_pids))
            figures.append(canvas_scenario(
                fan_name, lambda: chain(noop.s(0), chord([noop.s() for _ in range(args.fan)], noop.s())), 1,
                args.fan, monitor, timeout, False, canvas_pids))
            figures.append(canvas_scenario(
                runs_name, lambda: chain(noop.s(0), chord([noop.s() for _ in range(args.run_fan)], noop.s())),
                args.runs, args.run_fan, monitor, timeout, False, canvas_pids))
            time.sleep(1.0)
            figures.append(canvas_scenario(
                long_name, lambda: chain(noop.s(0), chord([sleep.s() for _ in range(args.long_width)], noop.s())),
                1, args.long_width, monitor, timeout, False, canvas_pids))
            canvas_key = f"{tag}:canvas-pickup"

            def stamp_one() -> float:
                workflow_canvas_app.stamp.apply_async(args=[canvas_key], ignore_result=True)
                return time.time()

            pickups["canvas on Redis"] = pickup_latencies(stamp_one, redis.Redis.from_url(private.url(1)),
                                                          canvas_key, args.pickups, args.pickup_gap, timeout)
        raws.append(raw_queue(conn_str, args.round_trips, args.ceiling_messages))
    finally:
        monitor.close()
        private.stop()
        _delete_queues(conn_str, tag)
        with contextlib.suppress(Exception):
            from flowcraft_celery.stores.cosmos_client import get_client

            get_client().delete_database(tag)

    rtt_p50 = statistics.median(statistics.median(raw.rtt) for raw in raws)
    ceiling = statistics.median(raw.ceiling for raw in raws)
    print(f"\nmachine: {os.cpu_count()} cores, load average at the end {_load()}")
    print("raw Azure queue, plain SDK (sequential send->receive->delete round trips; 8 threads: send, "
          "receive(32)+delete, whole-message ceiling 1/(1/send+1/drain)):")
    for when, raw in zip(("before", "between", "after"), raws, strict=True):
        print(f"  {when:<8} {raw.text()}")
    print(f"  median   round trip p50 {_ms(rtt_p50)}, ceiling {ceiling:.0f} msg/s (the references below)")
    print(f"workers: {WORKERS} processes, prefork -c {CONCURRENCY} each, the app's default prefetch; flowcraft "
          f"over azurequeue (Redis wake-ups) + Cosmos emulator + Redis, task events off; canvas: the same no-op "
          f"task on a Redis broker and result backend (Celery's default prefetch multiplier 4)")
    for mode in MODES:
        print(f"  {mode.system}: {mode.title}")
    print()
    print(HEADER)
    for item in figures:
        print(item.row())
    print("timing (start called -> first finish, of which the client's starts; longest gap between two finishes):")
    for item in figures:
        if item.first is not None and item.longest_gap is not None:
            starts = "" if item.starting is None else f" (starts {_ms(item.starting)})"
            print(f"  {item.scenario:<24} {item.system:<18} first {_ms(item.first)}{starts}, "
                  f"longest gap {_ms(item.longest_gap)}")
    for service in ("queue", "cosmos"):
        print(f"{'Cosmos' if service == 'cosmos' else 'queue'} requests per node by kind:")
        for item in figures:
            if item.kinds is not None:
                kinds = Counter({k: n for k, n in item.kinds.items() if k.startswith(f"{service}.")})
                print(f"  {item.scenario:<24} {item.system:<18} {_kinds_text(kinds, item.nodes)}")
    print("Redis commands per node by name and key family (EVALSHA: the script; ids as * and {}):")
    for item in figures:
        if item.families is not None:
            print(f"  {item.scenario:<24} {item.system:<18} {_families_text(item.families, item.nodes)}")
    print("per node (/n): requests of every worker process plus the client's start; redis/arr: Redis commands "
          "on the join's keys per join arrival (flowcraft: arrive + claim scripts; canvas: the chord's keys); "
          "cpu/n: CPU time (user + system) of every worker process (main and pool) per node, from the OS "
          "(flowcraft's include the bench's counter dumps, 5 a second per process)")
    for item in figures:
        if item.scenario == long_name and item.system == MODES[0].system:
            net = item.net_of(idle)
            print(f"{long_name} ({item.system}) net of what the idle workers send and spend on their own in its "
                  f"{item.window:.1f} s (rates below): queue {(net.queue or 0) / net.nodes:.2f}/n, redis "
                  f"{net.redis / net.nodes:.2f}/n, cpu {_ms((net.cpu or 0) / net.nodes)}/n")
    ideal = math.ceil(args.long_width / (WORKERS * CONCURRENCY)) * args.long_seconds
    print(f"\n{long_name} of {args.long_seconds:g} s nodes on {WORKERS} idle workers x {CONCURRENCY} processes: "
          f"ideal makespan {ideal:g} s (waves of {WORKERS * CONCURRENCY})")
    for system, spread in spreads.items():
        print(f"  {system}: {_spread_text(spread)}")

    print(f"\nidle pick-up (publish -> an idle worker starts the task; {args.pickups} samples, each after "
          f"{args.pickup_gap:g} s idle):")
    for system, values in pickups.items():
        print(f"  {system:<18} p50 {_ms(_pct(values, 50))}  p95 {_ms(_pct(values, 95))}")
    print(f"delayed messages (due 1.5 s after sending; {len(late)} samples): delivered p50 "
          f"{_ms(_pct(late, 50))}, p95 {_ms(_pct(late, 95))} after their due time (earliest {_ms(min(late))})")
    idle_per_queue = idle.queue_per_s / consumed
    print(f"idle workers: {idle_per_queue:.3f} Azure queue requests/s per consumed queue "
          f"({WORKERS} workers, {consumed // WORKERS} queues each (tasks, reconcile), over {args.idle_window:g} s: "
          f"{_kinds_text(idle.kinds)}); {idle.redis_per_s:.2f} Redis commands/s (heartbeat events, remote-control "
          f"and keep-alive waits), {_ms(idle.cpu_per_s)} of CPU a second, all workers")

    theirs = {f.scenario: f for f in figures if f.system == "canvas on Redis"}
    print("\ntargets (one task per node, the default, is the one that counts; the opt-ins are shown alongside):")
    pickup_p50 = _pct(pickups[MODES[0].system], 50)
    print(f"  {_mark(pickup_p50 <= TARGET_PICKUP_P50)} transport: idle pick-up p50 {_ms(pickup_p50)} <= "
          f"{_ms(TARGET_PICKUP_P50)}")
    print(f"  {_mark(idle_per_queue <= TARGET_IDLE_PER_QUEUE)} transport: idle {idle_per_queue:.3f} requests/s "
          f"per queue <= {TARGET_IDLE_PER_QUEUE:g}")
    late_p50 = _pct(late, 50)
    print(f"  {_mark(min(late) >= 0 and late_p50 <= TARGET_PICKUP_P50)} transport: delayed message delivered "
          f"p50 {_ms(late_p50)} after due (never before: earliest {_ms(min(late))}) <= {_ms(TARGET_PICKUP_P50)}")
    for mode in MODES:
        ours = {f.scenario: f for f in figures if f.system == mode.system}
        print(f"  {mode.system} ({mode.title}):")
        hop_ours = _pct(ours[chain_name].hops, 50)
        print(f"    {_mark(hop_ours <= TARGET_HOP_RATIO * rtt_p50)} chain hop p50 {_ms(hop_ours)} = "
              f"{hop_ours / rtt_p50:.2f}x raw round trip <= {TARGET_HOP_RATIO:g}x "
              f"({hop_ours / _pct(theirs[chain_name].hops, 50):.2f}x canvas's)")
        for name, share in ((fan_name, TARGET_FAN_CEILING), (runs_name, TARGET_RUNS_CEILING)):
            rate = ours[name].nodes_per_s
            print(f"    {_mark(rate >= share * ceiling)} {name}: {rate:.1f} nodes/s = {rate / ceiling:.2f}x raw "
                  f"ceiling >= {share:g}x")
        for name, measured in ours.items():
            other = theirs[name]
            # the long fan's 7 nodes span 6 s in which idle workers' own traffic (its own target above) is most
            mine = measured.net_of(idle) if name == long_name else measured
            suffix = "" if mine is measured else " net of idle"
            if name != long_name:
                ratio = mine.nodes_per_s / other.nodes_per_s
                print(f"    {_mark(ratio >= TARGET_CANVAS_SHARE)} {name}: nodes/s {ratio:.2f}x canvas "
                      f">= {TARGET_CANVAS_SHARE:g}x")
            if mine.cpu is not None and measured.cpu is not None and other.cpu:
                cpu = (mine.cpu / mine.nodes) / (other.cpu / other.nodes)
                print(f"    {_mark(cpu <= TARGET_CPU_VS_CANVAS)} {name}: worker CPU/node{suffix} "
                      f"{_ms(mine.cpu / mine.nodes)} = {cpu:.2f}x canvas's ({_ms(other.cpu / other.nodes)}) "
                      f"<= {TARGET_CPU_VS_CANVAS:g}x" + (f" (all: {_ms(measured.cpu / mine.nodes)})" if suffix else ""))
            elif mine.cpu is not None:  # a short canvas run can use less than one tick of the OS's CPU clock
                print(f"    {_mark(False)} {name}: worker CPU/node{suffix} {_ms(mine.cpu / mine.nodes)}, not judged: "
                      f"canvas's CPU time was below the OS clock's resolution (run more nodes) <= "
                      f"{TARGET_CPU_VS_CANVAS:g}x")
            cosmos = (mine.cosmos or 0) / mine.nodes
            print(f"    {_mark(cosmos <= TARGET_COSMOS_PER_NODE)} {name}: {cosmos:.2f} Cosmos requests/node "
                  f"<= {TARGET_COSMOS_PER_NODE:g}")
            commands = mine.redis / mine.nodes
            print(f"    {_mark(commands <= TARGET_REDIS_PER_NODE)} {name}: {commands:.2f} Redis commands/node{suffix} "
                  f"<= {TARGET_REDIS_PER_NODE:g}" + (f" (all: {measured.redis / mine.nodes:.2f})" if suffix else ""))
            queue = (mine.queue or 0) / mine.nodes
            limit = TARGET_QUEUE_PER_NODE_CHAIN if name == chain_name else TARGET_QUEUE_PER_NODE_FAN
            print(f"    {_mark(queue <= limit)} {name}: {queue:.2f} queue requests/node{suffix} <= {limit:g}"
                  + (f" (all: {(measured.queue or 0) / mine.nodes:.2f})" if suffix else ""))
            if mine.arrivals:
                arrival = mine.join_commands / mine.arrivals
                print(f"    {_mark(arrival <= TARGET_REDIS_PER_ARRIVAL)} {name}: {arrival:.2f} Redis "
                      f"commands/join arrival <= {TARGET_REDIS_PER_ARRIVAL:g}")
        if long_name in ours:
            makespan = ours[long_name].seconds
            print(f"    {_mark(makespan <= TARGET_LONG_MAKESPAN * ideal)} {long_name} of {args.long_seconds:g} s "
                  f"nodes on {WORKERS} idle workers: {makespan:.2f} s = {makespan / ideal:.2f}x ideal "
                  f"({ideal:g} s) <= {TARGET_LONG_MAKESPAN:g}x (canvas {theirs[long_name].seconds:.2f} s)")

    per_node = profile.total / profile.nodes
    print(f"\nwhere the time goes: one run of 1->{args.run_fan}->1 ({profile.nodes} node tasks) executed in this "
          f"process under cProfile (task body only: receive, ack and polling are not in it): "
          f"{_ms(per_node)} per node")
    for name, seconds in profile.buckets.items():
        print(f"  {name:<30} {_ms(seconds / profile.nodes):>9} per node  {seconds / profile.total:6.1%}")
    print("  top functions by cumulative time (per node: time, calls):")
    for name, seconds, calls in profile.top:
        print(f"    {_ms(seconds):>9} {calls:6.1f}  {name}")


if __name__ == "__main__":
    main()
