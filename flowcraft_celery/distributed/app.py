"""The Celery app: configuration from `celeryconfig`, our transport, node tasks and the reconcile task.

`celery -A flowcraft_celery worker` imports this module (through `flowcraft_celery.distributed.app`).
Node modules (`flowcraft_node_modules`) are imported, and their tasks `flowcraft.node.<uses>`
registered, when the app is finalized, which a worker does before it consumes and any process
does when it looks up a task; a process that only sends messages (a client) imports none.

A worker reads every blueprint when it starts and refuses to start, naming the setting and the
file, when one cannot be read; once ready it publishes its catalog (blueprints and node
implementations) for clients, and withdraws itself from it when it stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Any

from celery import Celery
from celery.signals import (
    beat_init,
    before_task_publish,
    celeryd_after_setup,
    celeryd_init,
    import_modules,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutting_down,
)

import transports  # noqa: F401 - registers the azurequeue:// transport alias
from flowcraft_celery.distributed.core.logcontext import install_on_celery_logging
from flowcraft_celery.distributed.core.preflight import (
    check_settings,
    report_unreachable_broker,
    report_unreachable_redis,
)
from flowcraft_celery.distributed.core.problems import explain
from flowcraft_celery.distributed.core.published import (
    import_node_modules,
    load_worker_code,
    publish_catalog,
    worker_code,
)
from flowcraft_celery.distributed.core.retry_lines import quiet_outage_retries
from flowcraft_celery.distributed.core.runtime import reset_runtimes, runtime_for
from flowcraft_celery.distributed.core.secrets import censor_inspect_replies, protect_settings
from flowcraft_celery.distributed.core.shards import shards_to_consume
from flowcraft_celery.distributed.core.tracing import flush, inject, set_attributes, set_up, span
from flowcraft_celery.distributed.node.task import register_node_tasks
from flowcraft_celery.distributed.ops.flower import NodeTaskRegistry, install_broker
from flowcraft_celery.distributed.ops.throttle_metrics import start_reporter
from flowcraft_celery.distributed.reconcile.passes import pass_seconds, reconcile
from flowcraft_celery.distributed.reconcile.schedule import install_quiet_beat, record_pass
from flowcraft_celery.distributed.runs.delayed import install_delayed_index
from flowcraft_celery.engine.builtins import BUILTIN_REGISTRY
from flowcraft_celery.engine.registry import default_registry
from flowcraft_celery.model.validation import BUILTIN_USES
from flowcraft_celery.settings import SettingError, Settings
from flowcraft_celery.stores.catalog import RedisCatalogStore
from flowcraft_celery.stores.faults import classify
from transports.azurequeue import OUTAGES, redis_from_url
from transports.azurequeue.handback import install as install_hand_back

logger = logging.getLogger("flowcraft.worker")

#: The app of each worker (by name) that published its catalog, to withdraw it at shutdown.
_published: dict[str, Celery] = {}

#: Exit status of a worker that refuses to start because of a setting (as the CLI's).
EXIT_CONFIG = 3


class FlowcraftCelery(Celery):
    """A Celery app that registers the node tasks when it is finalized."""

    def finalize(self, auto: bool = False) -> None:
        """Finalize, then import the node modules and register one task per implementation."""
        first = not self.finalized
        super().finalize(auto)
        if first:
            import_node_modules(self.conf)
            registry = self.tasks
            with registry.own_tasks() if isinstance(registry, NodeTaskRegistry) else contextlib.nullcontext():
                register_node_tasks(self, sorted({*default_registry, *BUILTIN_REGISTRY, *BUILTIN_USES}))
            reset_runtimes()  # a runtime built before knew fewer node implementations


def create_app(config: str | None = None) -> Celery:
    """A configured app with `flowcraft.reconcile` registered (node tasks follow on finalize)."""
    registry = NodeTaskRegistry()
    celery_app = FlowcraftCelery("flowcraft_celery", tasks=registry)
    registry.app, registry.register_node_tasks = celery_app, register_node_tasks
    celery_app.config_from_object(config or os.environ.get("FLOWCRAFT_CONFIG_MODULE", "celeryconfig"))
    protect_settings(celery_app.conf)

    # quiet passes leave no result and no event; see distributed/reconcile/schedule.py
    @celery_app.task(name="flowcraft.reconcile", bind=True, ignore_result=True, send_events=False, shared=False)
    def reconcile_task(self: Any, stall_seconds: float | None = None) -> dict[str, int]:
        """Re-publish the outstanding work of stalled runs; returns the counts. A store that does not
        answer skips the pass (one line; the outage log tells the outage), the next pass tries again."""
        started = time.monotonic()
        try:
            rt = runtime_for(self.app.conf)
            with span("flowcraft.reconcile", {}):
                report = reconcile(self.app, rt, stall_seconds, seconds=pass_seconds(self.app)).to_dict()
                set_attributes({f"flowcraft.reconcile.{key}": value for key, value in report.items()})
        except Exception as exc:
            if classify(exc) != "infrastructure":
                raise
            logger.info("reconcile: pass skipped, the next one tries again: %s", exc)
            return {"skipped": 1}
        record_pass(self, rt, report, time.monotonic() - started)
        return report

    return celery_app


@celeryd_init.connect
def _hand_back_unstarted(instance: Any = None, **_: Any) -> None:
    """A worker on `azurequeue://` hands the messages it prefetched but never started back at once
    when it shuts down (the transport's worker step; the transport itself never imports Celery)."""
    install_hand_back(instance)


@celeryd_after_setup.connect
def _consume_every_shard(instance: Any = None, **_: Any) -> None:
    """A worker consumes every shard of each node queue it consumes (`-Q heavy` is all of heavy's)."""
    app = getattr(instance, "app", None)
    if not isinstance(app, FlowcraftCelery):
        return
    queues = app.amqp.queues
    for name in shards_to_consume(queues.consume_from or queues, app.conf):
        queues.select_add(name)


@import_modules.connect
def _load_worker_code(sender: Any = None, **_: Any) -> None:
    """A worker (or beat) reads its node modules and every blueprint before it starts; a fault stops it."""
    if not isinstance(sender, FlowcraftCelery):
        return
    try:
        check_settings(sender.conf)
        load_worker_code(sender.conf)
    except SettingError as exc:
        logger.critical("flowcraft: cannot start: %s", exc)
        raise SystemExit(EXIT_CONFIG) from exc
    with OUTAGES.quiet():  # each check says in its own line which service does not answer
        report_unreachable_broker(sender)
        report_unreachable_redis(sender.conf)
    install_broker(sender)  # Flower loads the app's modules too: its Broker page reads our queues


@worker_init.connect
def _own_tasks_only(sender: Any = None, **_: Any) -> None:
    """A worker runs the node tasks it imported, never one it only found in the catalog."""
    registry = getattr(getattr(sender, "app", None), "tasks", None)
    if isinstance(registry, NodeTaskRegistry):
        registry.serve_published = False


@worker_ready.connect
def _publish_catalog(sender: Any = None, **_: Any) -> None:
    """Publish what this worker runs, for clients (`flowcraft-celery blueprints`)."""
    app = getattr(sender, "app", None)
    code = worker_code(app.conf) if isinstance(app, FlowcraftCelery) else None
    if app is None or code is None:
        return
    queues = sorted(app.amqp.queues.consume_from or app.amqp.queues)
    settings = Settings.from_conf(app.conf)
    client = redis_from_url(settings.redis_url)
    try:
        publish_catalog(RedisCatalogStore(client, settings.key_prefix, settings.deployment),
                        str(sender.hostname), code, queues)
        _published[str(sender.hostname)] = app
        logger.info("flowcraft: published %d blueprint(s) (%s) and %d node implementation(s) for deployment %r",
                    len(code.blueprints), ", ".join(sorted(code.blueprints)) or "none", len(code.nodes),
                    settings.deployment)
    except Exception as exc:
        logger.error("flowcraft: could not publish the catalog: %s", explain(exc, app.conf, os.environ) or exc)
    finally:
        client.close()


@worker_shutting_down.connect
def _withdraw(sender: Any = None, **_: Any) -> None:
    """Take this worker out of the published catalog as its shutdown begins (its blueprints stay)."""
    app = _published.pop(str(sender), None)
    if app is None:
        return
    settings = Settings.from_conf(app.conf)
    client = redis_from_url(settings.redis_url)
    try:
        RedisCatalogStore(client, settings.key_prefix, settings.deployment).forget_worker(str(sender))
    except Exception as exc:
        logger.warning("flowcraft: could not withdraw from the catalog: %s", exc)
    finally:
        client.close()


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """A forked pool process must not share the parent's Cosmos and Redis connections."""
    reset_runtimes()
    start_reporter(app.conf)


@worker_init.connect
@beat_init.connect
def _report_throttling(sender: Any = None, **_: Any) -> None:
    """Throttled answers of the worker's main process (receives) and of beat reach the metrics."""
    start_reporter(getattr(sender, "app", app).conf)


install_on_celery_logging()
before_task_publish.connect(inject, weak=False)  # every message carries its sender's trace context
for _started in (worker_init, worker_process_init, beat_init):
    _started.connect(set_up, weak=False)
worker_process_shutdown.connect(flush, weak=False)
install_delayed_index()
install_quiet_beat()
quiet_outage_retries()


@worker_init.connect
@worker_ready.connect
def _censor_inspect(**_: Any) -> None:
    """`celery inspect` and Flower get no password, key or token in a worker's replies."""
    from celery.worker.control import Panel

    censor_inspect_replies(Panel)


# The Azure SDKs log every HTTP request at INFO; a worker at `-l INFO` should show tasks, not headers.
logging.getLogger("azure").setLevel(logging.WARNING)


def _started_by_celery() -> bool:
    """Whether this process is Celery's own command (`celery -A flowcraft_celery worker|beat|...`)."""
    program = sys.argv[0] if sys.argv else ""
    return os.path.basename(program) == "celery" or program.endswith(os.path.join("celery", "__main__.py"))


try:
    app = create_app()
except SettingError as exc:  # a setting celeryconfig cannot parse: one line, not Celery's load traceback
    if not _started_by_celery():
        raise
    print(f"flowcraft: cannot start: {exc}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG) from exc
