"""The soak's Celery settings (`bench/soak.py`, FLOWCRAFT_CONFIG_MODULE): the project's, with node
task results kept as briefly as finished runs (BENCH_SOAK_RESULT_EXPIRES seconds), so Redis returning
to its baseline after the soak shows that no key outlives its expiry."""

from __future__ import annotations

import os

from celeryconfig import *  # noqa: F403 - every project setting, one overridden below

result_expires = float(os.environ.get("BENCH_SOAK_RESULT_EXPIRES", "86400"))
