"""The transport's HTTP requests honour the proxy and CA settings of the environment, read once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from azure.core.pipeline.transport import HttpRequest

from tests.unit.transports.http_support import serving
from transports.azurequeue.httpenv import HttpEnvironment
from transports.azurequeue.stats import CountingTransport, RequestStats


class _Recorder(BaseHTTPRequestHandler):
    """Answers 200 and records the request target (an absolute URL when used as a proxy)."""

    seen: list[str] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    _Recorder.seen = []
    with serving(_Recorder) as httpd:
        yield httpd


def _get(url: str) -> int:
    transport = CountingTransport("queue", stats=RequestStats())
    with transport:
        return int(transport.send(HttpRequest("GET", url)).status_code)


def test_a_proxy_in_the_environment_carries_the_requests(server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert _get("http://queues.invalid/devstoreaccount1/q/messages") == 200
    assert _Recorder.seen == ["http://queues.invalid/devstoreaccount1/q/messages"]


def test_no_proxy_sends_directly(server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # a closed port: used, it would fail
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert _get(f"http://127.0.0.1:{server.server_port}/devstoreaccount1/q") == 200
    assert _Recorder.seen == ["/devstoreaccount1/q"]


def test_proxies_are_looked_up_once_per_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    env = HttpEnvironment()
    assert env.proxies("https://acct.queue.core.windows.net/q/messages")["https"] == "http://proxy.example:3128"
    monkeypatch.setenv("HTTPS_PROXY", "http://other.example:3128")
    assert env.proxies("https://acct.queue.core.windows.net/other")["https"] == "http://proxy.example:3128"


def test_a_ca_bundle_in_the_environment_replaces_the_default_store_only() -> None:
    env = HttpEnvironment({"REQUESTS_CA_BUNDLE": "/etc/corp-ca.pem"})
    assert env.verify(True) == "/etc/corp-ca.pem"
    assert env.verify(False) is False
    assert env.verify("/other.pem") == "/other.pem"
    assert HttpEnvironment({}).verify(True) is True


def test_cosmos_requests_go_through_the_proxy_of_the_environment(server: HTTPServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from flowcraft_celery.stores.cosmos_client import get_client

    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with contextlib.suppress(Exception):  # the recorder's empty answer is no Cosmos account
        get_client("AccountEndpoint=http://cosmos.invalid:8081/;AccountKey=a2V5;", verify_tls=False)
    assert _Recorder.seen and all(seen.startswith("http://cosmos.invalid:8081/") for seen in _Recorder.seen)
