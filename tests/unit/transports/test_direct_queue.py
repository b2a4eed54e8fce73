"""The transport's own signed queue requests step aside for the SDK whenever they cannot be sure."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from azure.storage.queue import QueueClient

from flowcraft_celery.devtools.testcerts import make_certs
from tests.unit.transports.http_support import serving
from transports.azurequeue.directqueue import DirectQueue
from transports.azurequeue.httpenv import HttpEnvironment
from transports.azurequeue.options import Options
from transports.azurequeue.throttling import ThrottleCounts, ThrottleWatch

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def client(port: int, credential: object = None, scheme: str = "http") -> QueueClient:
    url = f"{scheme}://127.0.0.1:{port}/devstoreaccount1"
    if credential is None:
        return QueueClient.from_connection_string(
            f"DefaultEndpointsProtocol={scheme};AccountName=devstoreaccount1;AccountKey={KEY};QueueEndpoint={url};",
            "q")
    return QueueClient(url, "q", credential=credential)


class Answering(BaseHTTPRequestHandler):
    """Answers every POST with `status` and counts them."""

    status = 201
    seen = 0

    def do_POST(self) -> None:
        type(self).seen += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


class Taking(Answering):
    """Takes every message (201 Created)."""


class Busy(Answering):
    """Answers every request 503 ServerBusy."""

    status = 503


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_a_throttled_send_goes_to_the_sdk_and_the_next_ones_too_for_a_while() -> None:
    Busy.seen = 0
    counts = ThrottleCounts()
    watch = ThrottleWatch("Azure Queue Storage", "the test's policy", counts=counts)
    with serving(Busy) as httpd:
        direct = DirectQueue.for_client(client(httpd.server_address[1]), HttpEnvironment(), watch)
        assert direct is not None
        assert direct.send("x") is False
        assert Busy.seen == 1
        assert counts.snapshot() == {"Azure Queue Storage|503": 1}, "the throttle watch did not hear of it"
        assert direct.send("x") is False and direct.delete("id", "pop") is False
        assert Busy.seen == 1, "a request went out while the SDK was to take them"


class ClosingWhenIdle(Answering):
    """Answers each request on a kept-alive HTTP/1.1 connection, then closes it (as Azurite does
    with a connection idle for 5-10 s), recording who sent the request."""

    protocol_version = "HTTP/1.1"
    agents: list[str] = []

    def do_POST(self) -> None:
        type(self).agents.append(self.headers.get("User-Agent") or "direct")
        super().do_POST()
        self.close_connection = True


def test_a_request_on_a_connection_the_server_closed_while_idle_is_sent_again_on_a_new_one() -> None:
    ClosingWhenIdle.agents = []
    with serving(ClosingWhenIdle) as httpd:
        direct = DirectQueue.for_client(client(httpd.server_address[1]), HttpEnvironment())
        assert direct is not None
        assert direct.send("one") is True
        time.sleep(0.1)  # the server has closed the kept-alive connection
        assert direct.send("two") is True
        assert direct.send("three") is True, "the retry made the client stand aside"
    assert ClosingWhenIdle.agents == ["direct"] * 3, "a request went to the SDK"


def test_a_closed_port_is_no_exception_and_the_sdk_takes_the_request() -> None:
    with serving(Busy) as httpd:
        port = httpd.server_address[1]
    direct = DirectQueue.for_client(client(port), HttpEnvironment())
    assert direct is not None
    started = time.monotonic()
    assert direct.send("x") is False and direct.receive(1, 30) is None
    assert time.monotonic() - started < 5


def test_only_an_account_key_without_a_proxy_takes_the_direct_path(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DirectQueue.for_client(client(10001, credential="sv=2024&sig=abc"), HttpEnvironment()) is None
    assert DirectQueue.for_client(client(10001), HttpEnvironment()) is not None
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert DirectQueue.for_client(client(10001), HttpEnvironment()) is None


def test_the_option_turns_it_off_and_names_a_bad_value() -> None:
    assert Options.from_transport_options({}).direct_requests is True
    assert Options.from_transport_options({"direct_requests": "false"}).direct_requests is False
    assert Options.from_transport_options({"direct_requests": False}).direct_requests is False
    with pytest.raises(ValueError, match="direct_requests must be true or false, not 'maybe'"):
        Options.from_transport_options({"direct_requests": "maybe"})


def test_over_tls_the_server_is_verified_against_the_environments_ca_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = make_certs(tmp_path)
    with serving(Taking, tls=certs) as httpd:
        port = httpd.server_address[1]
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        unverified = DirectQueue.for_client(client(port, scheme="https"), HttpEnvironment())
        assert unverified is not None and unverified.send("x") is False, "a server the store does not trust was used"
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certs.ca))
        verified = DirectQueue.for_client(client(port, scheme="https"), HttpEnvironment())
        assert verified is not None and verified.send("x") is True
