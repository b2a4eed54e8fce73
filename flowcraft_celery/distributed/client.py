"""Start, watch, resume and cancel workflow runs from any process that has the app's configuration."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery

from flowcraft_celery.distributed.core.runtime import Runtime, runtime_for
from flowcraft_celery.distributed.runs.control import cancel_run, resume_run
from flowcraft_celery.distributed.runs.errors import RunError, StartError
from flowcraft_celery.distributed.runs.starting import start_run
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.settings import Settings
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

    def start(self, blueprint: str | Flow | Blueprint, context: Mapping[str, Any] | None = None,
              run_id: str | None = None) -> Run:
        """Validate the blueprint, create the run and publish its start nodes, all or nothing
        (StartError naming the unreachable endpoint otherwise). With `run_id`, starting the same
        id again returns the run already started.

        `blueprint` is an id the deployment's workers published, or a `Flow`/`Blueprint` that
        must be the one the workers run (same content), so a run never meets another version.
        """
        try:
            runtime = self.runtime
            blueprint_id = self._resolve(blueprint)
        except (RunError, ValueError):
            raise  # an unknown or differing blueprint, or a wrong setting: said as it is
        except Exception as exc:
            raise StartError(f"run not started: {exc}".splitlines()[0]) from exc
        return Run(self, start_run(self.app, runtime, blueprint_id, context, run_id))

    def _resolve(self, blueprint: str | Flow | Blueprint) -> str:
        """The id to start, checked against what the workers run (RunError naming where it looked)."""
        given = blueprint.build() if isinstance(blueprint, Flow) else blueprint
        blueprint_id = given if isinstance(given, str) else given.id
        known = self.runtime.blueprints.get(blueprint_id)
        if known is None:
            raise RunError(self._unknown(blueprint_id))
        if isinstance(given, Blueprint) and given.fingerprint != known.fingerprint:
            raise RunError(f"blueprint {blueprint_id!r} given here differs from the one the workers run "
                           f"(fingerprint {given.fingerprint[:16]} here, {known.fingerprint[:16]} on the workers): "
                           "deploy it with the workers' FLOWCRAFT_BLUEPRINTS and restart them, then start it again")
        return blueprint_id

    def _unknown(self, blueprint_id: str) -> str:
        """Why `blueprint_id` cannot be started: what is published, and which settings were looked at."""
        settings = Settings.from_conf(self.app.conf)
        deployment = settings.deployment
        published = sorted(self.blueprints())
        sources = list(settings.blueprints)
        where = f"nor does FLOWCRAFT_BLUEPRINTS here ({', '.join(sources)}) define it" if sources else \
            "and FLOWCRAFT_BLUEPRINTS is not set here"
        return (f"unknown blueprint {blueprint_id!r}: no worker of deployment {deployment!r} published it "
                f"(published: {', '.join(published) or 'none'}), {where}; start a worker whose "
                "FLOWCRAFT_BLUEPRINTS names it (same FLOWCRAFT_QUEUE_PREFIX, FLOWCRAFT_DEFAULT_QUEUE and REDIS_URL)")

    def blueprints(self) -> dict[str, dict[str, Any]]:
        """The deployment's published blueprints by id: `{id, version, fingerprint, uses, publishedAt, worker}`."""
        catalog = self.runtime.catalog
        return catalog.entries() if catalog is not None else {}

    def workers(self) -> dict[str, dict[str, Any]]:
        """The deployment's workers that published their catalog: queues, node implementations, start time."""
        catalog = self.runtime.catalog
        return catalog.workers() if catalog is not None else {}

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
