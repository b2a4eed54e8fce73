"""The wire envelope and the timing read from Celery headers."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from transports.azurequeue import wire


def test_envelope_round_trip() -> None:
    envelope = {"m": {"body": "e30=", "properties": {"x": 1}, "headers": {}}, "due": 5.0}
    assert wire.decode(wire.encode(envelope)) == envelope


@pytest.mark.parametrize(
    "text", ["not json", "[1, 2]", '{"other": 1}', '{"m": "str"}', '{"m": {"body": "x"}}']
)
def test_foreign_text_is_poison_with_a_reason(text: str) -> None:
    with pytest.raises(wire.PoisonMessage):
        wire.decode(text)


def test_due_time_reads_celery_eta_aware_or_naive() -> None:
    eta = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert wire.due_time({"headers": {"eta": eta.isoformat()}}) == eta.timestamp()
    naive = eta.replace(tzinfo=None).isoformat()
    assert wire.due_time({"headers": {"eta": naive}}) == eta.timestamp()
    assert wire.due_time({"headers": {}}) is None
    assert wire.due_time({"headers": {"eta": "garbage"}}) is None


def test_initial_visibility_rounds_down_and_caps_at_seven_days() -> None:
    assert wire.initial_visibility(None, 100.0) == 0
    assert wire.initial_visibility(99.0, 100.0) == 0
    assert wire.initial_visibility(110.2, 100.0) == 10
    assert wire.initial_visibility(100.7, 100.0) == 0
    far = 100.0 + timedelta(days=30).total_seconds()
    assert wire.initial_visibility(far, 100.0) == wire.MAX_VISIBILITY_SECONDS


def test_time_to_live_takes_the_shorter_limit_after_the_delay() -> None:
    assert wire.time_to_live({"properties": {}}, None, 0) is None
    assert wire.time_to_live({"properties": {"expiration": "1500"}}, None, 0) == 2
    assert wire.time_to_live({"properties": {"expiration": 9000}}, 5000, 10) == 15
    assert wire.time_to_live({"properties": {}}, 300, 0) == 1


PART = {"body": "e30=", "properties": {"body_encoding": "base64"}, "headers": {}}


def test_bundle_envelope_decodes_to_its_parts_in_order() -> None:
    parts = [dict(PART, headers={"n": i}) for i in range(3)]
    envelope = wire.decode(wire.encode({"ms": parts}))
    assert envelope["ms"] == parts


def test_encode_parts_of_encoded_messages_round_trips() -> None:
    parts = [dict(PART, headers={"n": i}) for i in range(4)]
    text = wire.encode_parts([wire.encode(part) for part in parts])
    assert wire.decode(text) == {"ms": parts}
    assert len(text) == len(wire.encode({"ms": parts}))
    assert wire.decode(wire.encode_parts([wire.encode(parts[0])])) == {"m": parts[0]}


@pytest.mark.parametrize(
    "envelope",
    [
        {"ms": []},
        {"ms": PART},
        {"ms": "parts"},
        {"ms": [PART, {"body": "e30=", "headers": {}}]},
        {"ms": [PART, {"body": "e30=", "properties": "not a dict"}]},
        {"ms": [PART, "text"]},
    ],
    ids=["empty", "not-a-list", "text", "part-without-properties", "properties-not-a-dict", "part-not-a-dict"],
)
def test_bad_bundle_envelope_is_poison(envelope: dict[str, object]) -> None:
    with pytest.raises(wire.PoisonMessage, match="bundle"):
        wire.decode(wire.encode(envelope))


def test_a_celery_task_with_expires_is_kept_until_a_worker_revokes_it() -> None:
    task = {"headers": {"id": "t1", "task": "x", "expires": "2026-01-01T00:00:00+00:00"},
            "properties": {"expiration": "1000"}}
    assert wire.time_to_live(task, None, 0) is None
    assert wire.time_to_live(task, 60000, 0) == 60
    assert wire.time_to_live({"headers": {"id": "t1"}, "properties": {"expiration": "1000"}}, None, 0) == 1


def test_a_transient_message_popped_after_its_expiry_is_dropped() -> None:
    from transports.azurequeue.transient import decode, message_ttl_ms

    payload = '{"body": "x", "properties": {}}'
    now_ms = int(time.time() * 1000)
    assert decode(payload) == {"body": "x", "properties": {}}
    assert decode(f"{now_ms + 60_000}:{payload}") == {"body": "x", "properties": {}}
    assert decode(f"{now_ms - 1}:{payload}") is None
    assert message_ttl_ms({"x-message-ttl": 1500}) == 1500 and message_ttl_ms({}) is None


def test_a_property_json_cannot_carry_does_not_fail_the_publish() -> None:
    text = wire.encode({"m": {"body": "x", "properties": {"signal": object()}}})
    assert wire.decode(text)["m"]["body"] == "x"
