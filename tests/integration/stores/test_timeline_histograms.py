"""The deployment-wide latency histograms on a real Redis: what workers and run ends record is
read back as Prometheus histograms (cumulative buckets, count, sum), and executions per worker
are counted, whichever process wrote them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from flowcraft_celery.stores.histograms import NODE_SECONDS, QUEUE_WAIT_SECONDS, RUN_SECONDS, Observation, series
from flowcraft_celery.stores.timeline import RunTimeline

pytestmark = pytest.mark.integration


@pytest.fixture
def timelines() -> Iterator[tuple[RunTimeline, RunTimeline]]:
    """Two timelines over separate connections (two processes) under one prefix unique to the test."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    first, second = redis.Redis.from_url(url), redis.Redis.from_url(url)
    prefix = f"test-hist:{uuid.uuid4().hex}:"
    try:
        yield RunTimeline(first, prefix), RunTimeline(second, prefix)
    finally:
        keys = list(first.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            first.delete(*keys)
        first.close()
        second.close()


def test_attempts_and_run_ends_from_two_processes_add_up_to_one_histogram(
        timelines: tuple[RunTimeline, RunTimeline]) -> None:
    one, two = timelines
    one.begin("r1", "a@0", "step", 1, "w1@h", queue_wait=0.02).end("succeeded")
    two.begin("r1", "b@0", "step", 1, "w2@h", queue_wait=3.0).end("retrying", retry_in=1)
    two.begin("r1", "b@0", "step", 2, "w2@h").end("succeeded")  # ran inline: no queue wait
    one.observe(Observation(RUN_SECONDS, {"blueprint": "bp", "status": "completed"}, 42.0))
    two.observe(Observation(RUN_SECONDS, {"blueprint": "bp", "status": "failed"}, 0.7))

    found = series(one.histograms())
    [wait] = found[QUEUE_WAIT_SECONDS.name]
    assert (wait.labels, wait.count) == (("step",), 2) and wait.sum == pytest.approx(3.02)
    buckets = dict(wait.cumulative(QUEUE_WAIT_SECONDS))
    assert (buckets["0.01"], buckets["0.025"], buckets["2.5"], buckets["5.0"], buckets["+Inf"]) == (0, 1, 1, 2, 2)
    [ran] = found[NODE_SECONDS.name]
    assert ran.labels == ("step",) and ran.count == 3 and dict(ran.cumulative(NODE_SECONDS))["+Inf"] == 3
    runs = {entry.labels: entry for entry in found[RUN_SECONDS.name]}
    assert set(runs) == {("bp", "completed"), ("bp", "failed")}
    assert runs[("bp", "completed")].sum == 42.0 and dict(runs[("bp", "failed")].cumulative(RUN_SECONDS))["1.0"] == 1
    counters = two.counters()
    assert (counters["worker|w1@h"], counters["worker|w2@h"], counters["started|step"]) == (1, 2, 3)
