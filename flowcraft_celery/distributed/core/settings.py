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
