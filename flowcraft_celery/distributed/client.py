"""Start, watch, resume and cancel workflow runs from any process that has the app's configuration."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery

from flowcraft_celery.distributed.runs import RunError, StartError, cancel_run, resume_run, start_run
from flowcraft_celery.distributed.runtime import Runtime, runtime_for
from flowcraft_celery.stores.base import FINAL_STATES, RunStatusDoc


class Run:
    """A handle on one run."""

    def __init__(self, client: Client, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def status(self) -> RunStatusDoc:
        """The run's status document."""
        return self.client.status(self.run_id)

    def wait(self, timeout: float | None = None, on_poll: Callable[[RunStatusDoc], None] | None = None
             ) -> RunStatusDoc:
        """Block until the run is final or awaiting (TimeoutError after `timeout` seconds)."""
        return self.client.wait(self.run_id, timeout, on_poll)

    def __repr__(self) -> str:
        return f"Run({self.run_id!r})"


class Client:
    """The workflow API over the app's Cosmos, Redis and broker settings."""

    def __init__(self, app: Celery | None = None) -> None:
        if app is None:
            from flowcraft_celery.distributed.app import app as default_app

            app = default_app
        self.app = app

    @property
    def runtime(self) -> Runtime:
        """The process's stores and blueprints for this app."""
        return runtime_for(self.app.conf)

    def start(self, blueprint_id: str, context: Mapping[str, Any] | None = None, run_id: str | None = None) -> Run:
        """Validate the blueprint, create the run and publish its start nodes, all or nothing
        (StartError naming the unreachable endpoint otherwise). With `run_id`, starting the same
        id again returns the run already started."""
        try:
            runtime = self.runtime
        except Exception as exc:
            raise StartError(f"run not started: {exc}".splitlines()[0]) from exc
        return Run(self, start_run(self.app, runtime, blueprint_id, context, run_id))

    def status(self, run_id: str) -> RunStatusDoc:
        """The run's status document (RunError if unknown)."""
        doc = self.runtime.statuses.get(run_id)
        if doc is None:
            raise RunError(f"no run {run_id!r}")
        return doc

    def result(self, run_id: str) -> dict[str, Any]:
        """The run's `{status, context, errors}`; the context is read from the store when the
        status document does not carry it (too large, or the run has not ended)."""
        doc = self.status(run_id)
        result = dict(doc.get("result") or {"status": doc.get("status"), "errors": doc.get("errors") or []})
        if result.get("context") is None:
            result["context"] = self.runtime.contexts.snapshot(run_id)
            result.pop("contextInStore", None)
        return result

    def progress(self, run_id: str) -> int:
        """How many node executions of the run have finished."""
        return self.runtime.ledger.finished_count(run_id)

    def wait(self, run_id: str, timeout: float | None = None,
             on_poll: Callable[[RunStatusDoc], None] | None = None, interval: float = 0.25) -> RunStatusDoc:
        """Poll the status until it is final or awaiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            doc = self.status(run_id)
            if on_poll is not None:
                on_poll(doc)
            if doc.get("status") in FINAL_STATES or doc.get("status") == "awaiting":
                return doc
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} still {doc.get('status')} after {timeout} s")
            time.sleep(interval)

    def resume(self, run_id: str, action: str | None = None, output: Any = None, node_id: str | None = None) -> str:
        """Give an awaiting node its result; returns the token of the node resumed."""
        return resume_run(self.app, self.runtime, run_id, action, output, node_id)

    def cancel(self, run_id: str) -> bool:
        """Cancel a run; False if it had already ended."""
        return cancel_run(self.runtime, run_id)

    def list_runs(self, status: str | None = None, limit: int = 50) -> list[RunStatusDoc]:
        """Newest runs first, optionally only those in `status`."""
        return self.runtime.statuses.list_runs(status, limit)
