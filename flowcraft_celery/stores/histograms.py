"""Deployment-wide histograms kept in one Redis hash, so every process adds to the same series.

Workers (each pool child), beat and clients add observations with HINCRBY/HINCRBYFLOAT: one
field per series and bucket (`<name>|<labels JSON>|<upper bound>`, counted once in the bucket the
value falls in), plus `|count` and `|sum`. `series` reads the hash back into cumulative buckets for
the metrics endpoint, so no process keeps state of its own and a restart loses nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Histogram:
    """One histogram: its metric name, help text, label names and bucket upper bounds (seconds)."""

    name: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...]

    def bucket_of(self, value: float) -> str:
        """The upper bound of the bucket `value` falls in, as the hash field's suffix."""
        for bound in self.buckets:
            if value <= bound:
                return repr(bound)
        return "+Inf"


_SHORT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
          1800.0, 3600.0)
_LONG = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
         604800.0)

NODE_SECONDS = Histogram("flowcraft_node_run_seconds", "Time one node attempt ran on a worker, by implementation.",
                         ("uses",), _SHORT)
QUEUE_WAIT_SECONDS = Histogram("flowcraft_node_queue_wait_seconds", "Time a node message waited from its "
                               "publish (or due time, when delayed) until a worker started it, by implementation.",
                               ("uses",), _SHORT)
RUN_SECONDS = Histogram("flowcraft_run_duration_seconds", "Time from a run's start until it became final, by "
                        "blueprint and final status.", ("blueprint", "status"), _LONG)
#: Every histogram, by metric name.
HISTOGRAMS = {h.name: h for h in (NODE_SECONDS, QUEUE_WAIT_SECONDS, RUN_SECONDS)}


@dataclass(frozen=True)
class Observation:
    """One value of a histogram with its labels."""

    histogram: Histogram
    labels: Mapping[str, str]
    value: float

    def arguments(self) -> tuple[str, str, str]:
        """Series, bucket and value, as the Redis scripts take them (a negative value counts as 0)."""
        value = max(0.0, self.value) if math.isfinite(self.value) else 0.0
        series = f"{self.histogram.name}|{json.dumps([str(self.labels.get(n, '')) for n in self.histogram.labels])}"
        return series, self.histogram.bucket_of(value), repr(value)


@dataclass
class Series:
    """One labelled series read back: cumulative bucket counts, count and sum."""

    labels: tuple[str, ...]
    buckets: dict[str, float] = field(default_factory=dict)
    count: float = 0.0
    sum: float = 0.0

    def cumulative(self, histogram: Histogram) -> list[tuple[str, float]]:
        """(upper bound, observations at or below it) for every bucket, `+Inf` last."""
        out, running = [], 0.0
        for bound in (*map(repr, histogram.buckets), "+Inf"):
            running += self.buckets.get(bound, 0.0)
            out.append((bound, running))
        return out


def series(fields: Mapping[str, float] | Iterable[tuple[str, float]]) -> dict[str, list[Series]]:
    """The histogram hash's fields grouped by metric name into series (unknown fields are skipped)."""
    items = fields.items() if isinstance(fields, Mapping) else fields
    found: dict[tuple[str, str], Series] = {}
    for key, value in items:
        name, _, rest = key.partition("|")
        labels_json, _, suffix = rest.rpartition("|")
        if name not in HISTOGRAMS or not labels_json:
            continue
        try:
            labels = tuple(str(v) for v in json.loads(labels_json))
        except ValueError:
            continue
        entry = found.setdefault((name, labels_json), Series(labels))
        if suffix == "count":
            entry.count = value
        elif suffix == "sum":
            entry.sum = value
        else:
            entry.buckets[suffix] = value
    grouped: dict[str, list[Series]] = {}
    for (name, _), entry in sorted(found.items()):
        grouped.setdefault(name, []).append(entry)
    return grouped
