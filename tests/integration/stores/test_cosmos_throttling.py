"""Throttling: our client waits out 429 + retry-after, via a fault-injecting proxy to the emulator.

The emulator never throttles, so a small HTTP proxy forwards every request to it and answers
the first N item writes with 429 Too Many Requests and `x-ms-retry-after-ms` itself.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest
import requests
from azure.cosmos import PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError

from flowcraft_celery.stores.cosmos_client import (
    THROTTLE_RETRIES,
    get_client,
    parse_connection_string,
    request_counts,
    reset_request_counts,
)

RETRY_AFTER_MS = 250


class ThrottlingProxy(ThreadingHTTPServer):
    """Forwards to the emulator; answers the next `throttle` document writes with 429."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream.rstrip("/")
        self.throttle = 0
        self.throttled_at: list[float] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        """The proxy's own endpoint."""
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def take_throttle(self) -> bool:
        """Whether to throttle this write (and count it)."""
        with self.lock:
            if self.throttle <= 0:
                return False
            self.throttle -= 1
            self.throttled_at.append(time.monotonic())
            return True


class _Handler(BaseHTTPRequestHandler):
    """One proxied request."""

    server: ThrottlingProxy

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet."""

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "POST" and self.path.rstrip("/").endswith("/docs") and self.server.take_throttle():
            payload = json.dumps({"code": "TooManyRequests", "message": "throttled"}).encode()
            self.send_response(429)
            self.send_header("x-ms-retry-after-ms", str(RETRY_AFTER_MS))
            self.send_header("x-ms-substatus", "3200")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        answer = requests.request(
            self.command, self.server.upstream + self.path, headers=headers, data=body,
            verify=False, timeout=30,
        )
        content = answer.content
        if self.path == "/":
            upstream = urlparse(self.server.upstream)
            for host in ("localhost", "127.0.0.1"):
                content = content.replace(
                    f"https://{host}:{upstream.port}/".encode(), self.server.url.encode()
                )
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection",
                                    "content-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


@pytest.fixture
def proxy(services_env: dict[str, str]) -> Iterator[ThrottlingProxy]:
    """A throttling proxy in front of the emulator, shut down after the test."""
    account = parse_connection_string(os.environ["AZURE_COSMOS_CONNECTION_STRING"])
    server = ThrottlingProxy(account.endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_throttled_writes_wait_for_retry_after_then_succeed(proxy: ThrottlingProxy) -> None:
    key = parse_connection_string(os.environ["AZURE_COSMOS_CONNECTION_STRING"]).key
    client = get_client(f"AccountEndpoint={proxy.url};AccountKey={key};", verify_tls=False)
    database = f"throttle-{uuid.uuid4().hex[:8]}"
    container = client.create_database_if_not_exists(database).create_container_if_not_exists(
        "items", PartitionKey(path="/pk")
    )
    try:
        proxy.throttle = 2
        reset_request_counts()
        started = time.monotonic()
        container.upsert_item({"id": "a", "pk": "p", "v": 1})
        assert container.read_item("a", "p")["v"] == 1
        assert len(proxy.throttled_at) == 2
        assert time.monotonic() - started >= 2 * RETRY_AFTER_MS / 1000
        assert proxy.throttled_at[1] - proxy.throttled_at[0] >= RETRY_AFTER_MS / 1000
        assert request_counts()["docs:upsert"] == 3

        proxy.throttle = THROTTLE_RETRIES + 5
        with pytest.raises(CosmosHttpResponseError) as info:
            container.upsert_item({"id": "b", "pk": "p"})
        assert info.value.status_code == 429
    finally:
        proxy.throttle = 0
        client.delete_database(database)
