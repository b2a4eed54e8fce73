"""Reading the flowcraft settings out of the Celery configuration (`celeryconfig.py` fills them from
the environment); each helper knows its default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def deployment_name(conf: Mapping[str, Any]) -> str:
    """The deployment's name: the full name of its default queue (queue prefix + default queue).

    Runs carry it; listing and reconcile see only their own deployment's runs, so deployments
    sharing a Cosmos database and a Redis prefix never touch each other's runs. Workers
    publish their catalog under it.
    """
    options = conf.get("broker_transport_options") or {}
    return f"{options.get('queue_name_prefix') or ''}{conf.get('task_default_queue') or 'celery'}"


def key_prefix(conf: Mapping[str, Any]) -> str:
    """Prefix of every Redis key (FLOWCRAFT_KEY_PREFIX)."""
    return str(conf.get("flowcraft_key_prefix") or "flowcraft:")


def redis_url(conf: Mapping[str, Any]) -> str:
    """Redis for joins, locks, the ledger and the catalog (REDIS_URL)."""
    return str(conf.get("flowcraft_redis_url") or "redis://127.0.0.1:6379/0")


def node_modules(conf: Mapping[str, Any]) -> list[str]:
    """Modules defining node implementations (FLOWCRAFT_NODE_MODULES)."""
    return [str(m) for m in conf.get("flowcraft_node_modules") or [] if str(m).strip()]


def blueprint_sources(conf: Mapping[str, Any]) -> list[str]:
    """Blueprint files, folders and `module:attr` objects (FLOWCRAFT_BLUEPRINTS)."""
    return [str(s) for s in conf.get("flowcraft_blueprints") or [] if str(s).strip()]


#: Times a node may kill its worker process before its run fails, unless FLOWCRAFT_MAX_NODE_CRASHES says.
DEFAULT_MAX_NODE_CRASHES = 3


def max_node_crashes(conf: Mapping[str, Any]) -> int:
    """Crashes a node may cause before its run fails (FLOWCRAFT_MAX_NODE_CRASHES), kept below the
    transport's `max_delivery_count`: the crash that reaches the limit is seen on the next delivery,
    which the transport must still hand over (it dead-letters a message delivered more often)."""
    from transports.azurequeue import Options

    options = conf.get("broker_transport_options") or {}
    deliveries = int(options.get("max_delivery_count") or Options.max_delivery_count)
    wanted = int(conf.get("flowcraft_max_node_crashes") or DEFAULT_MAX_NODE_CRASHES)
    return max(1, min(wanted, deliveries - 1))
