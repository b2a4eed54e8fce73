"""A CI-sized part of kombu's and Celery's own integration suites, run against `azurequeue://`
and `cosmos://` exactly as `make suites` runs them in full (`suites/run.py`: the sdists of the
installed kombu and Celery, unpacked into a temp folder, with our plug-ins; docs/upstream-suites.md).

The first run downloads the two sdists (PyPI) into the cache `suites/run.py` names.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
_SUITE = re.compile(r"^SUITE (?P<label>.*) \[all\]: (?P<passed>\d+) passed, (?P<failed>\d+) failed, "
                    r"(?P<skipped>\d+) skipped, (?P<xfailed>\d+) xfailed", re.M)

#: Celery tests that exercise what differs on this broker and backend: results stored and
#: polled, expiry, revoke, chords (nested, large headers), remote control.
CELERY_SELECTION = "(" + " or ".join([
    "test_simple_call",
    "test_expired",
    "test_timeout",
    "test_revoked",
    "test_nested_chord",
    "test_chord_in_chords_with_chains",
    "test_large_header",
    "test_ping",
    "test_active_queues",
]) + ") and not by_headers"  # test_revoked_by_headers_complex_canvas fails on Redis too


def run_suite(*args: str, timeout: float) -> tuple[dict[str, int], str]:
    """Run `suites/run.py` with `args`; the counts of its summary line and its output."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "suites" / "run.py"), *args], cwd=ROOT, env=dict(os.environ),
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    output = proc.stdout + proc.stderr
    match = _SUITE.search(output)
    assert match, output[-4000:]
    counts = {k: int(v) for k, v in match.groupdict().items() if k != "label"}
    return counts, output


def test_kombu_suite_with_redis_url_passes_in_full() -> None:
    counts, output = run_suite("kombu", "--redis", "--", "-q", timeout=240)
    assert counts == {"passed": 25, "failed": 0, "skipped": 0, "xfailed": 0}, output[-4000:]


def test_kombu_suite_azure_only_connection_and_expiration() -> None:
    counts, output = run_suite("kombu", "--", "-q", "-k", "failed or TimeToLive or test_publish_consume",
                               timeout=240)
    assert counts["failed"] == 0 and counts["passed"] >= 8, output[-4000:]


@pytest.mark.timeout(600)
def test_celery_suite_results_chords_expiry_and_control() -> None:
    counts, output = run_suite("celery", "--files", "test_tasks.py", "test_canvas.py", "test_inspect.py",
                               "--", "-q", "--timeout", "120", "-k", CELERY_SELECTION, timeout=580)
    assert counts["failed"] == 0 and counts["passed"] >= 10, output[-6000:]
