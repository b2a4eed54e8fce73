"""What every fault test module shares: an app and client on a service set, workers, counts, waits."""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient
from kombu import pools

from flowcraft_celery.devtools.workers import WorkerGroup
from flowcraft_celery.distributed.client import Client
from flowcraft_celery.stores.base import FINAL_STATES, RecordedOutput, RunStatusDoc
from tests.integration import names
from tests.integration.celery_settings import settings_applied
from transports.azurequeue import wire
from transports.azurequeue.naming import azure_queue_name, dead_letter_queue_name

ROOT = Path(__file__).resolve().parents[3]
NODES = "tests.integration.faults.fault_nodes"


@dataclass
class FaultKit:
    """A client on one service set, the workers' environment, and the processes started so far."""

    client: Client
    env: dict[str, str]
    log_dir: Path
    calls_file: Path
    groups: list[WorkerGroup] = field(default_factory=list)

    def group(self, **overrides: str) -> WorkerGroup:
        """A new worker group (stopped at module teardown at the latest)."""
        group = WorkerGroup({**self.env, **overrides}, self.log_dir / f"group{len(self.groups)}", cwd=ROOT)
        self.groups.append(group)
        return group

    def stop_all(self) -> None:
        """Stop every worker and beat started so far."""
        for group in self.groups:
            group.stop()

    def start(self, blueprint_id: str, count: int = 1, **context: Any) -> list[str]:
        """Start `count` runs; their ids."""
        return [self.client.start(blueprint_id, dict(context)).run_id for _ in range(count)]

    def calls(self, run_id: str) -> Counter[str]:
        """How often each node of the run was invoked, over every worker process."""
        return Counter(node for run, node, *_ in self._lines() if run == run_id)

    def call_times(self, run_id: str) -> list[float]:
        """When the run's node invocations started."""
        return [float(line[-1]) for line in self._lines() if line[0] == run_id]

    def _lines(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [line.split() for line in self.calls_file.read_text().splitlines() if line.strip()]

    def outputs(self, run_id: str) -> list[RecordedOutput]:
        """Every output recorded for the run."""
        return self.client.runtime.contexts.outputs(run_id)

    def status(self, run_id: str) -> RunStatusDoc:
        """The run's status document."""
        return self.client.status(run_id)

    def wait_final(self, run_ids: Iterable[str], timeout: float) -> dict[str, RunStatusDoc]:
        """Wait until every run is final or awaiting; their status documents."""
        docs: dict[str, RunStatusDoc] = {}
        deadline = time.monotonic() + timeout
        for run_id in run_ids:
            docs[run_id] = self.client.wait(run_id, max(1.0, deadline - time.monotonic()), interval=0.5)
        return docs

    def queue(self, queue: str | None = None) -> QueueClient:
        """The Azure queue behind a Celery queue (the module's default queue by default)."""
        prefix = os.environ.get("FLOWCRAFT_QUEUE_PREFIX", "")
        name = azure_queue_name(queue or self.env["FLOWCRAFT_DEFAULT_QUEUE"], prefix)
        return QueueClient.from_connection_string(self.env["AZURE_STORAGE_CONNECTION_STRING"], name)

    def queue_length(self, queue: str | None = None) -> int:
        """Messages (visible or not) on a queue; 0 when it does not exist."""
        try:
            return int(self.queue(queue).get_queue_properties().approximate_message_count or 0)
        except ResourceNotFoundError:
            return 0

    def dead_letters(self) -> int:
        """Messages on the default queue's dead-letter queue."""
        return self.queue_length(dead_letter_queue_name(self.env["FLOWCRAFT_DEFAULT_QUEUE"]))

    def dead_letter_reasons(self) -> list[str]:
        """The `x-dead-letter-reason` of each message on the default queue's dead-letter queue
        (peeked, up to 32)."""
        try:
            peeked = self.queue(dead_letter_queue_name(self.env["FLOWCRAFT_DEFAULT_QUEUE"])).peek_messages(32)
        except ResourceNotFoundError:
            return []
        envelopes = [wire.decode(str(message.content)) for message in peeked]
        return [str((e.get("m") or {}).get("headers", {}).get("x-dead-letter-reason")) for e in envelopes]

    def logs(self) -> str:
        """Every worker and beat log so far, concatenated."""
        return "\n".join(log.read_text(errors="replace") for group in self.groups for log in group.logs
                         if log.exists())


def assert_recorded_once(kit: FaultKit, run_id: str, nodes: set[str]) -> None:
    """Each node of the run has exactly one recorded output, and nothing else is recorded."""
    recorded = Counter((o.node_id, o.iteration) for o in kit.outputs(run_id))
    assert set(recorded) == {(n, 0) for n in nodes}, f"run {run_id}: outputs {sorted(recorded)}"
    assert all(n == 1 for n in recorded.values())


def assert_completed_once(kit: FaultKit, docs: Mapping[str, RunStatusDoc], nodes: set[str]) -> None:
    """Every run completed, each of its nodes recorded once and called once."""
    for run_id, doc in docs.items():
        assert doc["status"] == "completed", (run_id, doc.get("errors"))
        assert_recorded_once(kit, run_id, nodes)
        assert set(kit.calls(run_id).values()) == {1}, kit.calls(run_id)


def is_final(doc: Mapping[str, Any]) -> bool:
    """Whether a status document is final."""
    return doc.get("status") in FINAL_STATES


@contextlib.contextmanager
def fault_kit(service_env: Mapping[str, str], log_dir: Path, tag: str, **settings: str) -> Iterator[FaultKit]:
    """A client configured for `service_env` with a unique queue, key prefix and database; the
    environment is restored and every process stopped afterwards."""
    unique = names.unique_name(tag)
    env = {**service_env, "FLOWCRAFT_DEFAULT_QUEUE": unique, "FLOWCRAFT_KEY_PREFIX": f"{unique}:",
           "FLOWCRAFT_COSMOS_DATABASE": unique, "FLOWCRAFT_NODE_MODULES": NODES,
           "FLOWCRAFT_BLUEPRINTS": f"{NODES}:blueprints", "FLOWCRAFT_TASK_EVENTS": "false",
           "FAULT_CALLS_FILE": str(log_dir / "calls.txt"), **settings}
    with settings_applied(env):
        from flowcraft_celery.distributed.app import create_app

        # Celery takes producers from kombu's process-wide pools, keyed by the broker URL: every
        # module's `azurequeue://` looks the same, so a pool left by another module would publish to
        # that module's (private, maybe stopped) Azurite.
        pools.reset()
        kit = FaultKit(Client(create_app()), env, log_dir, log_dir / "calls.txt")
        try:
            yield kit
        finally:
            kit.stop_all()
            pools.reset()
