"""Kombu queue names map to valid, distinct Azure queue names."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from transports.azurequeue.naming import (
    azure_queue_name,
    dead_letter_queue_name,
    is_valid_queue_name,
    listing_prefix,
)

NAMES = st.text(min_size=1, max_size=120)


def test_celery_queue_names_become_valid_azure_names() -> None:
    for name in ["celery", "celery.pidbox", "celeryev.5c2d", "a_b", "CAPS", "x" * 200, "q", "-"]:
        assert is_valid_queue_name(azure_queue_name(name)), name


def test_a_name_azure_accepts_is_kept() -> None:
    assert azure_queue_name("celery") == "celery"
    assert azure_queue_name("tasks", "app1-") == "app1-tasks"


def test_mapped_names_keep_a_readable_part_and_the_prefix() -> None:
    mapped = azure_queue_name("worker1@host.celery.pidbox", "t1-")
    assert mapped.startswith("t1-worker1-host-celery-pidbox-")


@given(NAMES, st.sampled_from(["", "p-", "Test_Run."]))
def test_every_name_maps_to_a_valid_name_deterministically(name: str, prefix: str) -> None:
    mapped = azure_queue_name(name, prefix)
    assert is_valid_queue_name(mapped)
    assert mapped == azure_queue_name(name, prefix)
    assert mapped.startswith(listing_prefix(prefix))


@given(NAMES, NAMES)
def test_distinct_names_never_share_a_queue(first: str, second: str) -> None:
    if first != second:
        assert azure_queue_name(first) != azure_queue_name(second)


def test_names_differing_only_in_case_or_punctuation_stay_apart() -> None:
    variants = ["Celery", "celery_", "celery.", "CELERY", "ce-lery", "ce.lery", "ce_lery"]
    assert len({azure_queue_name(v) for v in variants} | {azure_queue_name("celery")}) == 8


def test_dead_letter_queue_name() -> None:
    assert dead_letter_queue_name("celery") == "celery-dlq"
    assert is_valid_queue_name(azure_queue_name(dead_letter_queue_name("x" * 70)))
