"""Tracing is off unless OpenTelemetry's variables ask for it, a no-op without the package, and
puts a span's W3C trace context into the headers of the messages published inside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = """
import json, sys
if {block}:
    sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
from flowcraft_celery.distributed.core import tracing
headers = {{}}
with tracing.span("flowcraft.node demo", {{"flowcraft.run_id": "r1", "flowcraft.node": "demo"}}):
    tracing.inject(headers)
tracing.flush()
print(json.dumps({{"enabled": tracing.enabled(), "headers": headers}}))
"""


def run(env: dict[str, str], block: bool = False) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-c", SCRIPT.format(block=block)], env={**clean, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)


def outcome(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_without_otel_variables_nothing_is_traced() -> None:
    assert outcome(run({})) == {"enabled": False, "headers": {}}


def test_without_the_package_the_variables_change_nothing() -> None:
    assert outcome(run({"OTEL_TRACES_EXPORTER": "console"}, block=True)) == {"enabled": False, "headers": {}}


def test_console_exporter_prints_the_span_and_headers_carry_its_context() -> None:
    done = run({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "unit-svc"})
    result = outcome(done)
    assert result["enabled"] is True
    traceparent = str(dict(result["headers"])["traceparent"])  # type: ignore[arg-type]
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, len(trace_id), len(span_id)) == ("00", 32, 16) and int(flags, 16) & 1  # sampled
    assert '"name": "flowcraft.node demo"' in done.stdout and f'"span_id": "0x{span_id}"' in done.stdout
    assert '"flowcraft.run_id": "r1"' in done.stdout and '"service.name": "unit-svc"' in done.stdout


def test_an_unknown_exporter_turns_tracing_off_with_one_warning() -> None:
    done = run({"OTEL_TRACES_EXPORTER": "nosuchexporter"})
    assert outcome(done) == {"enabled": False, "headers": {}}
    assert "tracing is off: OTEL_TRACES_EXPORTER names 'nosuchexporter'" in done.stderr


def test_otel_sdk_disabled_wins() -> None:
    assert outcome(run({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}))["enabled"] is False
