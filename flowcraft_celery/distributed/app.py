"""The Celery app: configuration from `celeryconfig`, our transport, node tasks and the reconcile task.

`celery -A flowcraft_celery worker` imports this module (through `flowcraft_celery.distributed.app`);
node modules named in `flowcraft_node_modules` are imported so each implementation gets
its task `flowcraft.node.<uses>`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready

import transports  # noqa: F401 - registers the azurequeue:// transport alias
from flowcraft_celery.distributed.bridge import register_node_tasks
from flowcraft_celery.distributed.delayed import install_delayed_index
from flowcraft_celery.distributed.logcontext import install_on_celery_logging
from flowcraft_celery.distributed.reconcile import reconcile
from flowcraft_celery.distributed.reconcile_passes import install_quiet_beat, record_pass
from flowcraft_celery.distributed.runtime import reset_runtimes, runtime_for
from flowcraft_celery.distributed.secrets import censor_inspect_replies, protect_settings
from flowcraft_celery.engine.builtins import BUILTIN_REGISTRY
from flowcraft_celery.engine.registry import default_registry, import_modules
from flowcraft_celery.model.validation import BUILTIN_USES


def create_app(config: str | None = None) -> Celery:
    """A configured app with every known node task and `flowcraft.reconcile` registered."""
    celery_app = Celery("flowcraft_celery")
    celery_app.config_from_object(config or os.environ.get("FLOWCRAFT_CONFIG_MODULE", "celeryconfig"))
    protect_settings(celery_app.conf)
    import_modules(list(celery_app.conf.get("flowcraft_node_modules") or []))
    register_node_tasks(celery_app, sorted({*default_registry, *BUILTIN_REGISTRY, *BUILTIN_USES}))

    # quiet passes leave no result and no event; see distributed/reconcile_passes.py
    @celery_app.task(name="flowcraft.reconcile", bind=True, ignore_result=True, send_events=False, shared=False)
    def reconcile_task(self: Any, stall_seconds: float | None = None) -> dict[str, int]:
        """Re-publish the outstanding work of stalled runs; returns the counts."""
        started = time.monotonic()
        rt = runtime_for(self.app.conf)
        report = reconcile(self.app, rt, stall_seconds).to_dict()
        record_pass(self, rt, report, time.monotonic() - started)
        return report

    return celery_app


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """A forked pool process must not share the parent's Cosmos and Redis connections."""
    reset_runtimes()


install_on_celery_logging()
install_delayed_index()
install_quiet_beat()


@worker_init.connect
@worker_ready.connect
def _censor_inspect(**_: Any) -> None:
    """`celery inspect` and Flower get no password, key or token in a worker's replies."""
    from celery.worker.control import Panel

    censor_inspect_replies(Panel)


# The Azure SDKs log every HTTP request at INFO; a worker at `-l INFO` should show tasks, not headers.
logging.getLogger("azure").setLevel(logging.WARNING)

app = create_app()
