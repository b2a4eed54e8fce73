"""What a worker (or beat) checks about its service settings before it starts.

A setting that cannot work whatever the network does (a connection string or URL that does not
parse, one that is missing) stops the process with one line naming it (`SettingError`). A
service that does not answer yet (the storage account behind the broker, Redis) is only reported,
in one line naming its endpoint and setting: the worker starts anyway and keeps retrying, as it
does for any outage.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import redis
from celery import Celery

from flowcraft_celery.distributed.core.problems import STORAGE_ENV, STORAGE_FIX, explain
from flowcraft_celery.settings import SettingError, Settings
from transports.azurequeue import redis_from_url

logger = logging.getLogger("flowcraft.worker")


def _as_setting_error(exc: Exception, conf: Mapping[str, Any], env: Mapping[str, str]) -> Exception:
    problem = explain(exc, conf, env)
    return problem if isinstance(problem, SettingError) else exc


def check_settings(conf: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
    """Raise SettingError for a flowcraft setting that is wrong (`Settings.from_conf` checks each), or a Cosmos,
    Azure Storage or Redis setting that is missing or malformed."""
    from flowcraft_celery.stores.cosmos_client import (
        CosmosConfigError,
        connection_string_from_env,
        parse_connection_string,
        parse_verify_flag,
        verify_tls_from_env,
    )

    env = os.environ if env is None else env
    settings = Settings.from_conf(conf)
    try:
        parse_connection_string(str(conf.get("cosmos_connection_string") or connection_string_from_env()))
        parse_verify_flag(conf.get("cosmos_verify_tls"), verify_tls_from_env())
    except CosmosConfigError as exc:
        raise _as_setting_error(exc, conf, env) from exc
    broker = str(conf.get("broker_url") or "")
    options = conf.get("broker_transport_options") or {}
    if broker.rstrip("/") == "azurequeue:":
        conn_str = options.get("connection_string") or env.get(STORAGE_ENV)
        if not conn_str:
            raise SettingError(STORAGE_ENV, f"{STORAGE_ENV} is not set", STORAGE_FIX)
        from azure.storage.queue import QueueServiceClient

        try:
            QueueServiceClient.from_connection_string(str(conn_str))
        except ValueError as exc:
            raise _as_setting_error(exc, conf, env) from exc
    try:
        redis.connection.parse_url(settings.redis_url)
    except ValueError as exc:
        raise _as_setting_error(exc, conf, env) from exc


def report_unreachable_broker(app: Celery) -> bool:
    """Connect to the broker once (the transport asks the storage account to answer, briefly); if it
    does not, log one line naming its endpoint and setting. True if it answered."""
    if not str(app.conf.get("broker_url") or "").startswith("azurequeue:"):
        return True
    connection = app.connection_for_write()
    try:
        connection.ensure_connection(max_retries=0, reraise_as_library_errors=False)  # one try
        return True
    except Exception as exc:
        problem = explain(exc, app.conf, os.environ) or exc
        logger.error("flowcraft: %s (the worker keeps retrying)", problem)
        return False
    finally:
        connection.release()


def report_unreachable_redis(conf: Mapping[str, Any], timeout: float = 3.0) -> bool:
    """Ping Redis once; if it does not answer, log one line naming REDIS_URL. True if it answered."""
    client = redis_from_url(Settings.from_conf(conf).redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
        return True
    except redis.RedisError as exc:
        problem = explain(exc, conf, os.environ) or exc
        logger.error("flowcraft: %s (the worker keeps retrying)", problem)
        return False
    finally:
        client.close()
