"""The transport options of `azurequeue://`, with their defaults, read from Kombu's dict."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Options:
    """Every tunable of the transport; see the docstring of the `transports.azurequeue` package."""

    queue_name_prefix: str = ""
    visibility_timeout: int = 30
    max_delivery_count: int = 5
    polling_interval: float = 0.1
    max_polling_interval: float = 8.0
    max_messages_per_poll: int = 32
    large_message_threshold: int = 61440
    blob_container: str = "kombu-large-messages"
    blob_account_url: str | None = None
    binding_cache_seconds: float = 5.0
    queue_heartbeat_interval: float = 60.0
    settle_threads: int = 8
    redis_url: str | None = None
    redis_key_prefix: str = "azurequeue:"
    redis_credential: str | None = None
    gather_seconds: float = 0.02
    transient_max_length: int = 10000
    bundle_size: int = 4
    retry_first_backoff: float = 0.25
    retry_max_backoff: float = 4.0
    retry_total: int = 10
    direct_requests: bool = True

    @classmethod
    def from_transport_options(cls, options: dict[str, Any]) -> Options:
        """Pick this transport's options out of Kombu's transport options, converting types."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if options.get(f.name) is None:
                continue
            default = getattr(cls, f.name)
            if isinstance(default, bool):
                values[f.name] = _flag(f.name, options[f.name])
                continue
            kind = type(default) if default is not None else str
            values[f.name] = kind(options[f.name])
        if not 1 <= values.get("max_messages_per_poll", 32) <= 32:
            raise ValueError("max_messages_per_poll must be between 1 and 32")
        if not 1 <= values.get("bundle_size", 4) <= 32:
            raise ValueError("bundle_size must be between 1 and 32")
        if values.get("visibility_timeout", 30) < 1:
            raise ValueError("visibility_timeout must be at least 1 second")
        if values.get("gather_seconds", 0.0) < 0:
            raise ValueError("gather_seconds must not be negative")
        return cls(**values)

    @property
    def stale_after(self) -> float:
        """Seconds without heartbeat after which a transient queue counts as abandoned."""
        return 3 * self.queue_heartbeat_interval

    @property
    def redis_namespace(self) -> str:
        """The prefix of every Redis key of this transport (the queue prefix keeps tests apart)."""
        return f"{self.redis_key_prefix}{self.queue_name_prefix}"


def _flag(name: str, value: Any) -> bool:
    """A boolean option from a bool or its usual spellings (`true`/`false`, `1`/`0`, `yes`/`no`)."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, not {value!r}")
