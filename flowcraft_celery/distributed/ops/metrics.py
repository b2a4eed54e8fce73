"""Prometheus metrics of a deployment: queue depths, dead letters, runs by status, node counters.

`FlowcraftCollector` reads, at scrape time and no more often than its refresh intervals:

* queue depths and dead letters from Azure (`distributed/ops/queues.py`): one `list` plus one
  `get_properties` per queue of the prefix, at most every `queue_interval` seconds (15);
* runs by status from Cosmos DB: one COUNT query per status, at most every `runs_interval`
  seconds (60);
* the age of each task queue's oldest visible message: one `peek` per task queue, with the queues;
* node and reconcile counters and the latency histograms from Redis (two HGETALLs per scrape, no
  Azure request): workers count each node attempt's start and end and record its queue wait and
  run time (`stores/timeline.py`, `stores/histograms.py`), beat's reconcile counts its passes, and
  whichever process finishes a run records its duration.

A scrape between refreshes answers from the last values. `flowcraft-celery metrics` serves the
collector over HTTP (`prometheus_client`); docs/operations.md has a sample scrape and costs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from celery import Celery
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from flowcraft_celery.distributed.core.runtime import runtime_for
from flowcraft_celery.distributed.ops.queues import QueueRow, queue_rows
from flowcraft_celery.stores.cosmos_client import request_counts
from flowcraft_celery.stores.histograms import HISTOGRAMS, series
from transports.azurequeue import STATS

logger = logging.getLogger("flowcraft.metrics")

#: The statuses runs are counted in.
RUN_STATUSES = ("running", "awaiting", "completed", "failed", "cancelled", "stalled")
#: Node counters kept by the workers: `<event>|<uses>` in the Redis metrics hash.
NODE_COUNTERS = {
    "started": ("flowcraft_node_executions", "Node attempts started (retries included)."),
    "succeeded": ("flowcraft_node_successes", "Node attempts that succeeded."),
    "retrying": ("flowcraft_node_retries", "Node attempts that failed and will be retried."),
    "failed": ("flowcraft_node_failures", "Node attempts that failed for good (fallback or run failure)."),
}


class _Cached:
    """A value refreshed at most every `interval` seconds; the last good one on failure."""

    def __init__(self, interval: float, load: Callable[[], Any]) -> None:
        self.interval = interval
        self._load = load
        self._value: Any = None
        self._at = float("-inf")
        self.ok = False

    def get(self) -> Any:
        now = time.monotonic()
        if now - self._at >= self.interval:
            try:
                self._value, self.ok = self._load(), True
            except Exception as exc:  # an unreachable service must not break the other metrics
                logger.warning("metrics: %s", exc)
                self.ok = False
            self._at = now
        return self._value


class FlowcraftCollector:
    """The deployment's metrics for a `prometheus_client` registry."""

    def __init__(self, app: Celery, queue_interval: float = 15.0, runs_interval: float = 60.0) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._queues = _Cached(queue_interval, lambda: queue_rows(app, fronts=True))
        self._runs = _Cached(runs_interval, lambda: runtime_for(app.conf).statuses.count_by_status(RUN_STATUSES))
        self._counters = _Cached(0.0, lambda: runtime_for(app.conf).timeline.counters())
        self._histograms = _Cached(0.0, lambda: runtime_for(app.conf).timeline.histograms())

    def collect(self) -> Iterator[Metric]:
        """Every metric family (called by the registry on each scrape)."""
        with self._lock:
            rows: list[QueueRow] = self._queues.get() or []
            runs: dict[str, int] = self._runs.get() or {}
            counters: dict[str, int] = self._counters.get() or {}
            histograms: dict[str, float] = self._histograms.get() or {}
            sources = {"queues": self._queues.ok, "runs": self._runs.ok,
                       "counters": self._counters.ok and self._histograms.ok}
        yield from self._queue_metrics(rows)
        gauge = GaugeMetricFamily("flowcraft_runs", "Runs of this deployment by status.", labels=["status"])
        for status, count in sorted(runs.items()):
            gauge.add_metric([status], count)
        yield gauge
        yield from self._counter_metrics(counters)
        yield from self._histogram_metrics(histograms)
        up = GaugeMetricFamily("flowcraft_metrics_source_up", "1 if the source answered at its last refresh.",
                               labels=["source"])
        for source, ok in sources.items():
            up.add_metric([source], 1 if ok else 0)
        yield up
        yield from self._own_costs()

    @staticmethod
    def _queue_metrics(rows: list[QueueRow]) -> Iterator[Metric]:
        total = GaugeMetricFamily("flowcraft_queue_messages", "Azure's approximate message count of the queue "
                                  "(ready, delayed and held by workers).", labels=["queue", "kind"])
        visible = GaugeMetricFamily("flowcraft_queue_visible_messages", "Messages of a task queue not delayed: "
                                    "ready, or held by a worker.", labels=["queue"])
        delayed = GaugeMetricFamily("flowcraft_queue_delayed_messages", "Messages of a task queue waiting for "
                                    "their due time (countdown, retry, sleep).", labels=["queue"])
        dead = GaugeMetricFamily("flowcraft_dead_letter_messages", "Messages in the dead-letter queue of a queue.",
                                 labels=["queue"])
        oldest = GaugeMetricFamily("flowcraft_queue_oldest_message_age_seconds", "Seconds since the oldest visible "
                                   "message of a task queue was sent (0 when none is visible).", labels=["queue"])
        now = time.time()
        for row in rows:
            if row.info.messages is None:
                continue
            total.add_metric([row.info.name, row.info.kind], row.info.messages)
            if row.info.kind == "tasks":
                visible.add_metric([row.info.name], row.visible or 0)
                delayed.add_metric([row.info.name], row.delayed)
                oldest.add_metric([row.info.name], 0.0 if row.oldest is None else max(0.0, now - row.oldest))
            elif row.info.dead_letter_of is not None:
                dead.add_metric([row.info.dead_letter_of], row.info.messages)
        yield from (total, visible, delayed, dead, oldest)

    @staticmethod
    def _counter_metrics(counters: dict[str, int]) -> Iterator[Metric]:
        families = {event: CounterMetricFamily(name, doc, labels=["uses"])
                    for event, (name, doc) in NODE_COUNTERS.items()}
        passes = CounterMetricFamily("flowcraft_reconcile_passes", "Reconcile passes, by whether they found "
                                     "stalled runs (active) or not (quiet).", labels=["result"])
        republished = CounterMetricFamily("flowcraft_reconcile_republished", "Node messages reconcile re-published.")
        workers = CounterMetricFamily("flowcraft_worker_node_executions", "Node attempts started, by worker.",
                                      labels=["worker"])
        throttled = CounterMetricFamily("flowcraft_throttled_answers", "Answers of Azure services that throttled "
                                        "a worker or beat (retried with back-off, not failures).",
                                        labels=["service", "kind"])
        for key, value in sorted(counters.items()):
            event, _, label = key.partition("|")
            if event in families:
                families[event].add_metric([label], value)
            elif event == "reconcile":
                passes.add_metric([label], value)
            elif event == "republished":
                republished.add_metric([], value)
            elif event == "worker":
                workers.add_metric([label], value)
            elif event == "throttled":
                service, _, kind = label.partition("|")
                throttled.add_metric([service, kind], value)
        yield from families.values()
        yield passes
        yield republished
        yield workers
        yield throttled

    @staticmethod
    def _histogram_metrics(fields: dict[str, float]) -> Iterator[Metric]:
        """Node run time and queue wait by `uses`, run duration by blueprint and status."""
        found = series(fields)
        for name, histogram in HISTOGRAMS.items():
            family = HistogramMetricFamily(name, histogram.help, labels=list(histogram.labels))
            for entry in found.get(name, []):
                family.add_metric(list(entry.labels), entry.cumulative(histogram), sum_value=entry.sum)
            yield family

    @staticmethod
    def _own_costs() -> Iterator[Metric]:
        """The requests this exporter made, so its bill is on the dashboard too."""
        family = CounterMetricFamily("flowcraft_metrics_requests", "Requests this metrics process made to Azure "
                                     "services, by service and operation.", labels=["service", "operation"])
        for key, value in sorted(STATS.snapshot().items()):
            service, _, operation = key.partition(".")
            family.add_metric([f"storage-{service}", operation], value)
        for operation, value in sorted(request_counts().items()):
            family.add_metric(["cosmos", operation], value)
        yield family
