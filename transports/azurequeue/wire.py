"""The text a Kombu message becomes on an Azure queue, and the timing read from its headers."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from .errors import AzureQueueError

#: Azure refuses an initial visibility longer than seven days.
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600


class PoisonMessage(AzureQueueError, ValueError):
    """A queue message that this transport cannot turn back into a Kombu message."""


def encode(envelope: dict[str, Any]) -> str:
    """Serialize an envelope (`m` payload, `ms` bundle or `blob` reference, plus `due` and `dl`) to text.

    A value JSON cannot represent (an object passed as a message property, which AMQP would
    simply not carry) is sent as its `str`, never failing the publish."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=True, default=str)


#: Characters an envelope adds around the texts of the Kombu messages it carries (and more).
ENVELOPE_OVERHEAD = 16


def encode_parts(part_texts: list[str]) -> str:
    """The envelope text of Kombu messages already encoded: `m` for one, a bundle (`ms`) for several."""
    if len(part_texts) == 1:
        return '{"m":' + part_texts[0] + "}"
    return '{"ms":[' + ",".join(part_texts) + "]}"


def decode(text: str) -> dict[str, Any]:
    """Parse queue message text into an envelope, or raise PoisonMessage saying why not."""
    try:
        envelope = json.loads(text)
    except ValueError as exc:
        raise PoisonMessage(f"body is not JSON: {exc}") from exc
    if not isinstance(envelope, dict) or not ({"m", "ms", "blob", "raw"} & envelope.keys()):
        raise PoisonMessage("body is not an azurequeue envelope")
    if "m" in envelope and not _is_payload(envelope["m"]):
        raise PoisonMessage("envelope carries no Kombu message")
    if "ms" in envelope:
        parts = envelope["ms"]
        if not isinstance(parts, list) or not parts or not all(_is_payload(part) for part in parts):
            raise PoisonMessage("bundle envelope carries no list of Kombu messages")
    return envelope


def _is_payload(value: Any) -> bool:
    """Whether `value` looks like a Kombu message (a dict with a `properties` dict)."""
    return isinstance(value, dict) and isinstance(value.get("properties"), dict)


def payload_from(text: str) -> dict[str, Any]:
    """Parse the text of a Kombu message (an envelope's `m`, as stored in a blob)."""
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise PoisonMessage(f"stored body is not JSON: {exc}") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("properties"), dict):
        raise PoisonMessage("stored body is not a Kombu message")
    return payload


def due_time(payload: dict[str, Any]) -> float | None:
    """Return when a message may run (epoch seconds) from Celery's `eta` header, if any."""
    return eta_time((payload.get("headers") or {}).get("eta"))


def eta_time(eta: Any) -> float | None:
    """Epoch seconds of a Celery `eta` header value (ISO 8601; naive means UTC), or None."""
    if not eta:
        return None
    try:
        when = datetime.fromisoformat(str(eta))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def initial_visibility(due: float | None, now: float) -> int:
    """Seconds a message stays hidden after sending: whole seconds, so it appears up to one
    second before it is due (the consumer keeps it until then), capped at 7 days."""
    if due is None or due <= now:
        return 0
    return min(math.floor(due - now), MAX_VISIBILITY_SECONDS)


def time_to_live(payload: dict[str, Any], queue_ttl_ms: int | None, hidden: int) -> int | None:
    """Seconds the message lives: the shorter of its `expiration` and the queue's message TTL.

    A Celery task message's `expiration` (set from the task's `expires`) is not applied: Azure
    would delete it unseen and its result would stay PENDING for ever; kept, it reaches a worker,
    which sees `expires` has passed and records the task REVOKED (Celery's own semantics)."""
    candidates = []
    expiration = (payload.get("properties") or {}).get("expiration")
    if expiration is not None and not is_celery_task_with_expires(payload):
        candidates.append(float(expiration))
    if queue_ttl_ms is not None:
        candidates.append(float(queue_ttl_ms))
    if not candidates:
        return None
    return hidden + max(1, math.ceil(min(candidates) / 1000.0))


def is_celery_task_with_expires(payload: dict[str, Any]) -> bool:
    """Whether `payload` is a Celery task message (protocol 2) with an `expires` header."""
    headers = payload.get("headers") or {}
    return bool(headers.get("expires")) and bool(headers.get("id")) and bool(headers.get("task"))
