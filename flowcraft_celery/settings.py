"""flowcraft-celery's settings, each written once: its Celery configuration key, its environment variable,
its default and its check.

`celeryconfig.py` fills the Celery configuration from the environment (`Settings.from_env`); every
reader takes the values out of the configuration with `Settings.from_conf`, so a value a deployment's
own configuration sets is checked the same way, once, when the worker, beat or client starts. A
wrong value is a `SettingError` naming the setting: `flowcraft_stall_seconds must be a positive
number, got 0`, or from the environment `FLOWCRAFT_STALL_SECONDS: '0' is not a positive number;
unset it for the default (60)`. No reader has a default of its own.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flowcraft_celery.engine.builtins import DEFAULT_SUBFLOW_DEPTH, DEFAULT_WEBHOOK_BASE_URL
from flowcraft_celery.errors import FlowcraftError
from transports.azurequeue import (
    QUEUE_NAME_RULE,
    Options,
    Secret,
    account_entries,
    account_problem,
    prefix_problem,
    queue_problem,
)

#: Where Redis is when REDIS_URL is not set (the dev services' Redis).
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class SettingError(FlowcraftError, ValueError):
    """A setting is missing or wrong; the message names it and says what to do."""

    def __init__(self, setting: str, detail: str, fix: str | None = None) -> None:
        text = detail if detail.startswith(setting) else f"{setting}: {detail}"
        super().__init__(text + (f"; {fix}" if fix else ""))
        self.setting = setting


@dataclass(frozen=True)
class _Kind:
    """How a setting's value is read, and what it must be (for errors). `read` raises ValueError saying
    what the value is not: the kind (`a number`) when it cannot be read, else `wanted`."""

    read: Callable[[Any], Any]
    wanted: str
    #: The value is a secret: errors never show it, only what `read` says is wrong.
    secret: bool = False


def _number(kind: type[int] | type[float], least: float, strict: bool = False) -> _Kind:
    what = "whole number" if kind is int else "number"
    wanted = (f"a positive {what}" if strict and least == 0
              else f"a {what} of at least {least:g}" if least else f"a {what} >= 0")

    def read(value: Any) -> Any:
        if isinstance(value, bool) or (kind is int and isinstance(value, float)):
            raise ValueError(f"a {what}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"a {what}") from None
        if not math.isfinite(number) or number < least or (strict and number == least):
            raise ValueError(wanted)
        return number

    return _Kind(read, wanted)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("text")
    return value


def _credential(value: Any) -> Any:
    """A credential's name (`DefaultAzureCredential`, `module:attribute`) or, from a configuration, an
    Azure TokenCredential object itself."""
    if isinstance(value, str) or callable(getattr(value, "get_token", None)):
        return value
    raise ValueError("text or a TokenCredential")


def _items(value: Any) -> tuple[str, ...]:
    """A comma-separated list (from the environment) or a list of names (from a configuration)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError("a comma-separated list")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _accounts(value: Any) -> tuple[Secret, ...]:
    """Storage accounts: connection strings or `azurequeue://<credential>@<account url>`, separated by
    whitespace (from the environment) or a list (from a configuration); each checked, none shown."""
    if not isinstance(value, (str, list, tuple)):
        raise ValueError("not a list of connection strings")
    entries = account_entries(value)
    for number, entry in enumerate(entries, 1):
        problem = account_problem(entry)
        if problem is not None:
            raise ValueError(f"entry {number} (storage account {number}) is not usable: {problem}")
    return tuple(Secret(entry) for entry in entries)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    raise ValueError("true or false")


TEXT = _Kind(_text, "text")
CREDENTIAL = _Kind(_credential, "a credential name or a TokenCredential")
LIST = _Kind(_items, "a comma-separated list")
FLAG = _Kind(_flag, "true or false")
ACCOUNTS = _Kind(_accounts, "storage accounts: connection strings or azurequeue://<credential>@<account url>",
                 secret=True)
POSITIVE = _number(float, 0, strict=True)
NOT_NEGATIVE = _number(float, 0)
COUNT = _number(int, 0)
AT_LEAST_ONE = _number(int, 1)


@dataclass(frozen=True)
class _Spec:
    """One setting: its Celery key (`outer.inner` for an entry of a dict setting), variable (empty: none),
    default and kind."""

    key: str
    env: str
    default: Any
    kind: _Kind

    def value_in(self, conf: Mapping[str, Any]) -> Any:
        """The configured value, None when the configuration does not set it."""
        outer, _, inner = self.key.partition(".")
        value = conf.get(outer)
        if inner:
            value = value.get(inner) if isinstance(value, Mapping) else None
        return value


#: Every setting by attribute of `Settings`. An empty text (or an unset key) means the default.
SPECS: dict[str, _Spec] = {
    "broker_url": _Spec("broker_url", "CELERY_BROKER_URL", "azurequeue://", TEXT),
    "result_backend": _Spec("result_backend", "CELERY_RESULT_BACKEND", "cosmos://", TEXT),
    "queue_prefix": _Spec("broker_transport_options.queue_name_prefix", "FLOWCRAFT_QUEUE_PREFIX", "", TEXT),
    "visibility_timeout": _Spec("broker_transport_options.visibility_timeout", "FLOWCRAFT_VISIBILITY_TIMEOUT", 30,
                                AT_LEAST_ONE),
    "storage_retry_backoff": _Spec("broker_transport_options.retry_first_backoff", "FLOWCRAFT_STORAGE_RETRY_BACKOFF",
                                   0.25, NOT_NEGATIVE),
    "storage_retry_max_backoff": _Spec("broker_transport_options.retry_max_backoff",
                                       "FLOWCRAFT_STORAGE_RETRY_MAX_BACKOFF", 4.0, NOT_NEGATIVE),
    "storage_retry_total": _Spec("broker_transport_options.retry_total", "FLOWCRAFT_STORAGE_RETRY_TOTAL", 10, COUNT),
    "direct_queue_requests": _Spec("broker_transport_options.direct_requests", "FLOWCRAFT_DIRECT_QUEUE_REQUESTS",
                                   True, FLAG),
    "direct_cosmos_requests": _Spec("flowcraft_direct_cosmos_requests", "FLOWCRAFT_DIRECT_COSMOS_REQUESTS", True,
                                    FLAG),
    "default_queue": _Spec("task_default_queue", "FLOWCRAFT_DEFAULT_QUEUE", "flowcraft", TEXT),
    "reconcile_queue": _Spec("flowcraft_reconcile_queue", "FLOWCRAFT_RECONCILE_QUEUE", "", TEXT),
    "prefetch_multiplier": _Spec("worker_prefetch_multiplier", "FLOWCRAFT_PREFETCH_MULTIPLIER", 1, COUNT),
    "task_events": _Spec("worker_send_task_events", "FLOWCRAFT_TASK_EVENTS", True, FLAG),
    "cosmos_credential": _Spec("cosmos_credential", "FLOWCRAFT_COSMOS_CREDENTIAL", "", CREDENTIAL),
    "cosmos_database": _Spec("cosmos_database", "FLOWCRAFT_COSMOS_DATABASE", "flowcraft", TEXT),
    "cosmos_results_container": _Spec("cosmos_results_container", "FLOWCRAFT_COSMOS_RESULTS_CONTAINER",
                                      "celery_results", TEXT),
    "cosmos_context_container": _Spec("cosmos_context_container", "FLOWCRAFT_COSMOS_CONTEXT_CONTAINER", "context",
                                      TEXT),
    "cosmos_runs_container": _Spec("cosmos_runs_container", "FLOWCRAFT_COSMOS_RUNS_CONTAINER", "runs", TEXT),
    "node_modules": _Spec("flowcraft_node_modules", "FLOWCRAFT_NODE_MODULES", (), LIST),
    "blueprints": _Spec("flowcraft_blueprints", "FLOWCRAFT_BLUEPRINTS", (), LIST),
    "redis_url": _Spec("flowcraft_redis_url", "REDIS_URL", DEFAULT_REDIS_URL, TEXT),
    "key_prefix": _Spec("flowcraft_key_prefix", "FLOWCRAFT_KEY_PREFIX", "flowcraft:", TEXT),
    "touch_interval": _Spec("flowcraft_touch_interval", "FLOWCRAFT_TOUCH_INTERVAL", 15.0, POSITIVE),
    "stall_seconds": _Spec("flowcraft_stall_seconds", "FLOWCRAFT_STALL_SECONDS", 60.0, POSITIVE),
    "reconcile_interval": _Spec("flowcraft_reconcile_interval", "FLOWCRAFT_RECONCILE_INTERVAL", 30.0, POSITIVE),
    "reconcile_budget": _Spec("flowcraft_reconcile_budget", "FLOWCRAFT_RECONCILE_BUDGET", 200, AT_LEAST_ONE),
    "queue_shards": _Spec("flowcraft_queue_shards", "FLOWCRAFT_QUEUE_SHARDS", 1, AT_LEAST_ONE),
    "storage_accounts": _Spec("broker_transport_options.storage_accounts", "FLOWCRAFT_STORAGE_ACCOUNTS", (),
                              ACCOUNTS),
    "retention_days": _Spec("flowcraft_retention_days", "FLOWCRAFT_RETENTION_DAYS", 7.0, NOT_NEGATIVE),
    "inline_depth": _Spec("flowcraft_inline_depth", "FLOWCRAFT_INLINE_DEPTH", 0, COUNT),
    "fanout_group": _Spec("flowcraft_fanout_group", "FLOWCRAFT_FANOUT_GROUP", 1, AT_LEAST_ONE),
    "subflow_depth": _Spec("flowcraft_subflow_depth", "FLOWCRAFT_SUBFLOW_DEPTH", DEFAULT_SUBFLOW_DEPTH, COUNT),
    "webhook_base_url": _Spec("flowcraft_webhook_base_url", "FLOWCRAFT_WEBHOOK_BASE_URL", DEFAULT_WEBHOOK_BASE_URL,
                              TEXT),
    "redis_timeout": _Spec("flowcraft_redis_timeout", "FLOWCRAFT_REDIS_TIMEOUT", 10.0, POSITIVE),
    "max_node_crashes": _Spec("flowcraft_max_node_crashes", "FLOWCRAFT_MAX_NODE_CRASHES", 3, AT_LEAST_ONE),
    "max_delivery_count": _Spec("broker_transport_options.max_delivery_count", "", Options.max_delivery_count,
                                AT_LEAST_ONE),
    "start_timeout": _Spec("flowcraft_start_timeout", "FLOWCRAFT_START_TIMEOUT", 20.0, POSITIVE),
}


@dataclass(frozen=True)
class Settings:
    """Every flowcraft setting, checked (see `SPECS` for each one's key, variable and default)."""

    broker_url: str = SPECS["broker_url"].default
    result_backend: str = SPECS["result_backend"].default
    #: Prefix of every Azure queue name (the transport's `queue_name_prefix`).
    queue_prefix: str = SPECS["queue_prefix"].default
    visibility_timeout: int = SPECS["visibility_timeout"].default
    #: Storage throttling is retried after this many seconds, doubling up to the maximum, this many times.
    storage_retry_backoff: float = SPECS["storage_retry_backoff"].default
    storage_retry_max_backoff: float = SPECS["storage_retry_max_backoff"].default
    storage_retry_total: int = SPECS["storage_retry_total"].default
    #: The transport sends, receives and deletes messages with requests it signs (`directqueue`), not the SDK's.
    direct_queue_requests: bool = SPECS["direct_queue_requests"].default
    #: Node outputs are created in Cosmos DB with requests signed here (`stores/cosmos_direct.py`), not the SDK's.
    direct_cosmos_requests: bool = SPECS["direct_cosmos_requests"].default
    default_queue: str = SPECS["default_queue"].default
    #: The reconcile task's queue; empty: `<default queue>-reconcile` (see `reconcile_queue_name`).
    reconcile_queue: str = SPECS["reconcile_queue"].default
    prefetch_multiplier: int = SPECS["prefetch_multiplier"].default
    task_events: bool = SPECS["task_events"].default
    cosmos_credential: Any = SPECS["cosmos_credential"].default  # a name, or a TokenCredential
    cosmos_database: str = SPECS["cosmos_database"].default
    cosmos_results_container: str = SPECS["cosmos_results_container"].default
    cosmos_context_container: str = SPECS["cosmos_context_container"].default
    cosmos_runs_container: str = SPECS["cosmos_runs_container"].default
    node_modules: tuple[str, ...] = SPECS["node_modules"].default
    blueprints: tuple[str, ...] = SPECS["blueprints"].default
    redis_url: str = SPECS["redis_url"].default
    key_prefix: str = SPECS["key_prefix"].default
    touch_interval: float = SPECS["touch_interval"].default
    stall_seconds: float = SPECS["stall_seconds"].default
    reconcile_interval: float = SPECS["reconcile_interval"].default
    #: Runs one reconcile pass looks at, at most (in due order; the rest go first in the next pass).
    reconcile_budget: int = SPECS["reconcile_budget"].default
    #: Azure queues the default queue's node messages are spread over, by run (`distributed/core/shards.py`).
    queue_shards: int = SPECS["queue_shards"].default
    #: Further storage accounts for queue shards: shard i of a node queue lives in account i mod K (account 0:
    #: AZURE_STORAGE_CONNECTION_STRING's), `transports/azurequeue/accounts.py`.
    storage_accounts: tuple[Secret, ...] = SPECS["storage_accounts"].default
    #: Days a finished run's records are kept; 0 keeps them for ever.
    retention_days: float = SPECS["retention_days"].default
    inline_depth: int = SPECS["inline_depth"].default
    fanout_group: int = SPECS["fanout_group"].default
    subflow_depth: int = SPECS["subflow_depth"].default
    webhook_base_url: str = SPECS["webhook_base_url"].default
    redis_timeout: float = SPECS["redis_timeout"].default
    #: Crashes of its worker a node may cause before its run fails (see `crash_limit`).
    max_node_crashes: int = SPECS["max_node_crashes"].default
    #: Deliveries of a message before the transport dead-letters it (its own option; no variable).
    max_delivery_count: int = SPECS["max_delivery_count"].default
    start_timeout: float = SPECS["start_timeout"].default

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> Settings:
        """The settings a Celery configuration holds; SettingError names the first wrong one."""
        values: dict[str, Any] = {}
        for attribute, spec in SPECS.items():
            value = spec.value_in(conf)
            if value is None or value == "":
                continue
            try:
                values[attribute] = spec.kind.read(value)
            except ValueError as exc:
                fix = f"{spec.env} sets it from the environment; " if spec.env else ""
                detail = f"{spec.key}: {exc}" if spec.kind.secret else \
                    f"{spec.key} must be {spec.kind.wanted}, got {value!r:.80}"
                raise SettingError(spec.key, detail,
                                   f"{fix}the default is {spec.default!r}") from None
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment gives (unset or empty variables: the defaults); SettingError
        names the first wrong variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for attribute, spec in SPECS.items():
            text = environ.get(spec.env, "") if spec.env else ""
            if text == "":
                continue
            try:
                values[attribute] = spec.kind.read(text)
            except ValueError as exc:
                raise SettingError(spec.env, str(exc) if spec.kind.secret else f"{text!r} is not {exc}",
                                   f"unset it for the default ({_shown(spec.default)})") from None
        settings = cls(**values)
        for attribute, name, problem, example in settings.queue_name_problems():
            raise SettingError(SPECS[attribute].env, f"{name!r} {problem}", f"e.g. {example!r}")
        return settings

    def queue_name_problems(self) -> Iterator[tuple[str, str, str, str]]:
        """(attribute, name, problem, example) of each queue setting Azure would not keep as it is:
        deployments name their queues from the environment within Azure's rule (a name set in a
        configuration of its own is mapped by the transport, `transports.azurequeue.naming`)."""
        problem = prefix_problem(self.queue_prefix)
        if problem is not None:
            yield ("queue_prefix", self.queue_prefix,
                   f"{problem}: {QUEUE_NAME_RULE} (a prefix may end with one hyphen)", f"{_valid(self.queue_prefix)}-")
        for attribute, name in (("default_queue", self.default_queue), ("reconcile_queue", self.reconcile_queue_name)):
            problem = queue_problem(name, self.queue_prefix)
            if problem is not None:
                yield attribute, name, f"{problem}: {QUEUE_NAME_RULE}", _valid(name)

    @property
    def reconcile_queue_name(self) -> str:
        """The queue reconcile passes run on: their own, so a backlog of node tasks cannot delay them."""
        return self.reconcile_queue or f"{self.default_queue}-reconcile"

    @property
    def deployment(self) -> str:
        """The deployment's name: the full name of its default queue (queue prefix + default queue).

        Runs carry it; listing and reconcile see only their own deployment's runs, so deployments
        sharing a Cosmos database and a Redis prefix never touch each other's runs. Workers
        publish their catalog under it.
        """
        return f"{self.queue_prefix}{self.default_queue}"

    @property
    def crash_limit(self) -> int:
        """The crashes a node may cause before its run fails, kept below the transport's delivery limit:
        the crash that reaches it is seen on the next delivery, which the transport must still hand over."""
        return max(1, min(self.max_node_crashes, self.max_delivery_count - 1))

    @property
    def retention_seconds(self) -> float:
        """Seconds a finished run's records are kept (0: for ever)."""
        return self.retention_days * 86400


def _valid(name: str) -> str:
    """A name like `name` within Azure's queue naming rule, for error messages."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "flowcraft"


def _shown(default: Any) -> str:
    """A default as a user would type it in the environment."""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return ",".join(default) or "empty"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default) if default != "" else "empty"

