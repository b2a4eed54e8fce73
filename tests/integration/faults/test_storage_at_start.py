"""A storage account that is absent, hung or not a storage account at all: a worker says so once, at
start, naming the endpoint and the setting, and still stops within seconds of SIGTERM; the CLI
answers in one line with the exit code of a setting (3) or an unreachable service (4).

Cosmos DB and Redis are the shared dev services (only used, with this module's own names); the
broken endpoints are a closed port, a port that never answers and a plain HTTP server.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flowcraft_celery.devtools.devservices import HOST
from tests.integration.faults.kit import ROOT, FaultKit, fault_kit
from tests.integration.faults.private import free_ports
from tests.integration.polling import wait_for

#: A worker idle on a broken broker must exit within this many seconds of SIGTERM.
STOP_LIMIT = 10.0
#: How long the worker runs (retrying) before it is told to stop.
RETRYING = 8.0


class _NotStorage(BaseHTTPRequestHandler):
    """Answers every request 404 with an HTML page, as a web server on the wrong port would."""

    def _answer(self) -> None:
        body = b"<!DOCTYPE HTML><html><body>Not Found</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

    def log_message(self, *_: object) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str]) -> Iterator[FaultKit]:
    with fault_kit(services_env, tmp_path_factory.mktemp("storage-at-start"), "stst") as made:
        yield made


@pytest.fixture(scope="module")
def endpoints() -> Iterator[dict[str, int]]:
    """The broken endpoints by kind: a closed port, a silent one, an HTTP server that is no storage."""
    web = ThreadingHTTPServer((HOST, 0), _NotStorage)
    serving = threading.Thread(target=web.serve_forever, daemon=True)
    serving.start()
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen(64)
        try:
            yield {"closed": free_ports(1)[0], "hung": silent.getsockname()[1], "web": web.server_address[1]}
        finally:
            web.shutdown()
            web.server_close()


def _storage_on(kit: FaultKit, port: int) -> str:
    """The module's storage connection string with its queue endpoint on `port`."""
    return re.sub(r"QueueEndpoint=http://127\.0\.0\.1:\d+/", f"QueueEndpoint=http://{HOST}:{port}/",
                  kit.env["AZURE_STORAGE_CONNECTION_STRING"])


@pytest.mark.parametrize(("kind", "said"), [
    ("closed", "cannot reach Azure Storage at http://127.0.0.1:{port}/devstoreaccount1 "
               "(AZURE_STORAGE_CONNECTION_STRING): connection refused"),
    ("hung", "cannot reach Azure Storage at http://127.0.0.1:{port}/devstoreaccount1 "
             "(AZURE_STORAGE_CONNECTION_STRING): timed out"),
    ("web", "AZURE_STORAGE_CONNECTION_STRING: http://127.0.0.1:{port}/devstoreaccount1 answered 404"),
], ids=["closed", "hung", "web"])
def test_a_worker_says_once_which_storage_does_not_answer_and_stops_promptly(
        kit: FaultKit, endpoints: dict[str, int], kind: str, said: str) -> None:
    port = endpoints[kind]
    group = kit.group(AZURE_STORAGE_CONNECTION_STRING=_storage_on(kit, port))
    worker = group.worker(concurrency=1)
    log = group.logs[-1]
    expected = "flowcraft: " + said.format(port=port)
    wait_for(lambda: expected in log.read_text(errors="replace"), 60, f"{expected!r} in the worker's log")
    time.sleep(RETRYING)  # Celery's connection retries meanwhile
    assert worker.poll() is None, log.read_text(errors="replace")[-2000:]
    told = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=STOP_LIMIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker was still running {STOP_LIMIT:g} s after SIGTERM")
    finally:
        group.stop()
    stopped_in = time.monotonic() - told
    text = log.read_text(errors="replace")
    assert sum(line.startswith("flowcraft: ") for line in text.splitlines()) == 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert stopped_in < STOP_LIMIT


def _cli(kit: FaultKit, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`flowcraft-celery ARGS` from this checkout, with the module's settings plus `env`."""
    path = os.pathsep.join(p for p in (env.pop("PYTHONPATH", ""), str(ROOT)) if p)
    return subprocess.run([sys.executable, "-m", "flowcraft_celery.cli", *args], cwd=ROOT,
                          env={**os.environ, **kit.env, "FLOWCRAFT_START_TIMEOUT": "5", **env, "PYTHONPATH": path},
                          capture_output=True, text=True, timeout=90, check=False)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_an_endpoint_that_is_no_storage_account_is_a_one_line_setting_error(
        kit: FaultKit, endpoints: dict[str, int]) -> None:
    port = endpoints["web"]
    for args in (("start", "ft-other"), ("queues",)):
        result = _cli(kit, *args, AZURE_STORAGE_CONNECTION_STRING=_storage_on(kit, port))
        line = _one_line(result)
        assert result.returncode == 3, (args, result.returncode, line)
        assert f"AZURE_STORAGE_CONNECTION_STRING: http://127.0.0.1:{port}/devstoreaccount1 answered 404" in line
        assert "not the queue endpoint of a storage account" in line


def test_a_managed_identity_broker_url_without_azure_identity_is_a_one_line_setting_error(
        kit: FaultKit, tmp_path: Path) -> None:
    missing = tmp_path / "azure" / "identity"  # shadows the installed package, as if it were absent
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text('raise ImportError("No module named azure.identity", name="azure.identity")\n')
    url = f"azurequeue://DefaultAzureCredential@http://{HOST}:10001/devstoreaccount1"
    result = _cli(kit, "start", "ft-other", CELERY_BROKER_URL=url, PYTHONPATH=str(tmp_path))
    line = _one_line(result)
    assert result.returncode == 3, (result.returncode, line)
    assert "CELERY_BROKER_URL" in line and "flowcraft-celery[identity]" in line
