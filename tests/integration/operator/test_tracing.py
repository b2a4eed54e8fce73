"""Tracing with OpenTelemetry: a run across two real worker processes is one connected trace.

The test runs a small OTLP/HTTP receiver (decoding with `opentelemetry-proto`) and points the
standard `OTEL_*` variables of every process at it: the CLI that starts the run, two workers that
split the run's nodes between them by queue, and beat, whose reconcile passes are spans too.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from flowcraft_celery.devtools.workers import WorkerGroup
from tests.integration import names
from tests.integration.operator.conftest import ROOT, _cleanup_queues
from tests.integration.operator.tracing_nodes import NAP_SECONDS
from tests.integration.polling import wait_for

NODES = "tests.integration.operator.tracing_nodes"
RUN_NODES = ("start", "left", "right", "join", "finish")


@dataclass
class Span:
    """One exported span, as the receiver decoded it."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    service: str


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP trace receiver on a free loopback port, keeping every span it is sent."""

    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.add(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True).start()

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, request: ExportTraceServiceRequest) -> None:
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(Span(span.name, span.trace_id.hex(), span.span_id.hex(),
                                               span.parent_span_id.hex(), {a.key: _value(a.value)
                                                                           for a in span.attributes},
                                               str(resource.get("service.name"))))

    def of_run(self, run_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.attributes.get("flowcraft.run_id") == run_id]

    def named(self, name: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name == name]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    found = OtlpReceiver()
    found.start()
    try:
        yield found
    finally:
        found.stop()


@dataclass
class Traced:
    """The traced deployment: its environment and worker names."""

    env: dict[str, str]
    workers: dict[str, str]


@contextlib.contextmanager
def _deployment(log_dir: Path, services_env: dict[str, str], receiver: OtlpReceiver,
                node_modules: str = NODES) -> Iterator[Traced]:
    """Two workers (one per queue of trace-flow) and beat, exporting traces to the receiver."""
    tag = names.unique_name("trace")
    env = {**services_env, "FLOWCRAFT_QUEUE_PREFIX": f"{tag}-", "FLOWCRAFT_DEFAULT_QUEUE": "tasks",
           "FLOWCRAFT_KEY_PREFIX": f"{tag}:", "FLOWCRAFT_COSMOS_DATABASE": tag, "FLOWCRAFT_NODE_MODULES": node_modules,
           "FLOWCRAFT_BLUEPRINTS": f"{NODES}:blueprints", "FLOWCRAFT_RECONCILE_INTERVAL": "2",
           "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200",
           "OTEL_SERVICE_NAME": "flowcraft-trace-test", "PYTHONUNBUFFERED": "1"}
    group = WorkerGroup(env, log_dir, cwd=ROOT)
    host = socket.gethostname()
    workers = {"tasks": f"wa-{tag}@{host}", "tasks-b": f"wb-{tag}@{host}"}
    try:
        group.worker(queues="tasks,tasks-reconcile", concurrency=2, name=f"wa-{tag}")
        group.worker(queues="tasks-b", concurrency=2, name=f"wb-{tag}")
        group.beat()
        group.wait_ready(90)
        yield Traced(env, workers)
    finally:
        group.stop()
        _cleanup_queues(f"{tag}-")
        with contextlib.suppress(Exception):
            from flowcraft_celery.stores.cosmos_client import get_client

            get_client(None, False).delete_database(tag)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str],
           receiver: OtlpReceiver) -> Iterator[Traced]:
    """The traced deployment."""
    with _deployment(tmp_path_factory.mktemp("tracing"), services_env, receiver) as deployment:
        yield deployment


def start_run(traced: Traced, blueprint: str = "trace-flow") -> str:
    """`flowcraft-celery start BLUEPRINT` in the deployment's environment (traced too); the run id."""
    started = subprocess.run([sys.executable, "-m", "flowcraft_celery.cli", "start", blueprint],
                             env={**os.environ, **traced.env}, cwd=ROOT, capture_output=True, text=True, timeout=120,
                             check=False)
    assert started.returncode == 0, started.stderr
    return started.stdout.strip()


def node_spans(receiver: OtlpReceiver, run_id: str) -> list[Span]:
    """Every span of the run, once each of its nodes has one at the receiver."""
    def arrived() -> list[Span] | None:
        found = receiver.of_run(run_id)
        return found if len([s for s in found if s.name.startswith("flowcraft.node ")]) >= len(RUN_NODES) else None

    return wait_for(arrived, 60, "every node span of the run at the receiver", 0.5)


def test_a_run_across_two_workers_is_one_connected_trace(traced: Traced, receiver: OtlpReceiver) -> None:
    run_id = start_run(traced)
    spans = node_spans(receiver, run_id)

    [start] = [s for s in spans if s.name == "flowcraft.start"]
    assert start.parent_id == "" and start.service == "flowcraft-trace-test"
    nodes = {}
    for node in RUN_NODES:
        found = [s for s in spans if s.name == f"flowcraft.node {node}"]
        assert len(found) == 1, f"{len(found)} spans of node {node}"
        nodes[node] = found[0]
    assert {s.trace_id for s in spans} == {start.trace_id}, "the run's spans are in more than one trace"
    parents = {node: span.parent_id for node, span in nodes.items()}
    assert parents["start"] == start.span_id
    assert parents["left"] == parents["right"] == nodes["start"].span_id
    assert parents["join"] in {nodes["left"].span_id, nodes["right"].span_id}
    assert parents["finish"] == nodes["join"].span_id
    worker_of = {node: span.attributes["flowcraft.worker"] for node, span in nodes.items()}
    assert worker_of == {"start": traced.workers["tasks"], "right": traced.workers["tasks"],
                         "finish": traced.workers["tasks"], "left": traced.workers["tasks-b"],
                         "join": traced.workers["tasks-b"]}
    for node, span in nodes.items():
        assert span.attributes["flowcraft.blueprint"] == "trace-flow"
        assert (span.attributes["flowcraft.node"], span.attributes["flowcraft.iteration"],
                span.attributes["flowcraft.attempt"]) == (node, 0, 1)


def test_a_run_rebuilt_after_redis_lost_its_state_shows_the_recovery_in_its_trace(
        traced: Traced, receiver: OtlpReceiver) -> None:
    run_id = start_run(traced, "trace-nap")
    wait_for(lambda: [s for s in receiver.of_run(run_id) if s.name == "flowcraft.node nap"], 30,
             "the nap node's span (its wake-up message is on its way)", 0.2)
    client = redis.Redis.from_url(traced.env["REDIS_URL"])
    try:
        lost = [key for key in client.scan_iter(f"{traced.env['FLOWCRAFT_KEY_PREFIX']}*", count=1000)
                if run_id in key.decode()]
        assert lost and client.delete(*lost) == len(lost)
    finally:
        client.close()

    def recovered() -> list[Span] | None:
        found = receiver.of_run(run_id)
        names = [s.name for s in found]
        return found if "flowcraft.recover" in names and "flowcraft.node finish" in names else None

    spans = wait_for(recovered, NAP_SECONDS + 60, "the recovery's span and the finish node's", 0.5)
    [start] = [s for s in spans if s.name == "flowcraft.start"]
    [recover] = [s for s in spans if s.name == "flowcraft.recover"]
    naps = {s.span_id: s for s in spans if s.name == "flowcraft.node nap"}
    assert {s.trace_id for s in spans} == {start.trace_id}
    assert recover.parent_id in naps, "the rebuild happens while the nap's wake-up message is handled"
    assert recover.attributes["flowcraft.reason"] == "Redis held no state for the run"


def test_reconcile_passes_are_spans(traced: Traced, receiver: OtlpReceiver) -> None:
    passes = wait_for(lambda: receiver.named("flowcraft.reconcile"), 60, "a reconcile pass's span", 0.5)
    assert passes[0].parent_id == "" and passes[0].attributes["flowcraft.reconcile.stalled"] == 0


def test_our_spans_compose_with_celerys_own_instrumentation(tmp_path: Path, services_env: dict[str, str],
                                                            receiver: OtlpReceiver) -> None:
    with _deployment(tmp_path, services_env, receiver, f"{NODES},tests.integration.operator.celery_instrumented") \
            as deployment:
        run_id = start_run(deployment)
        ours = node_spans(receiver, run_id)
    with receiver.lock:
        by_id = {s.span_id: s for s in receiver.spans if s.trace_id == ours[0].trace_id}
    [start] = [s for s in ours if s.name == "flowcraft.start"]
    assert {s.trace_id for s in ours} == {start.trace_id}, "the run's spans are in more than one trace"
    for node in RUN_NODES:
        [span] = [s for s in ours if s.name == f"flowcraft.node {node}"]
        celery_run = by_id[span.parent_id]  # the instrumentation's span of the task sits between
        tree = "\n".join(f"{s.span_id} <- {s.parent_id} {s.name} {s.attributes.get('flowcraft.worker', '')}"
                         for s in by_id.values())
        assert celery_run.name.startswith("run/flowcraft.node."), f"{node}: parent {celery_run.name}\n{tree}"
        chain, parent = [], celery_run.parent_id
        while parent in by_id and not by_id[parent].name.startswith("flowcraft."):
            chain.append(by_id[parent].name)
            parent = by_id[parent].parent_id
        expected = "flowcraft.start" if node == "start" else "flowcraft.node "
        assert by_id[parent].name.startswith(expected), f"{node}: {chain} then {by_id[parent].name}"
