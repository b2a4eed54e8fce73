"""The Azure transports' HTTP session: a plain request goes out whole (method, path, headers,
body) and its answer comes back read; one asking for redirects takes the ordinary path."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from azure.core.pipeline.transport import HttpRequest

from tests.unit.transports.http_support import serving
from transports.azurequeue.directsession import DirectSession
from transports.azurequeue.stats import CountingTransport, RequestStats


class _Echo(BaseHTTPRequestHandler):
    """Records each request; `/moved` redirects to `/here`, anything else answers its body back."""

    seen: list[dict[str, Any]] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                "body": body})
        if self.path == "/moved":
            self.send_response(307)
            self.send_header("Location", "/here")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        answer = b"echo:" + body
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("x-ms-request-id", "r-1")
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_PUT = do_POST = _answer

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def url() -> Iterator[str]:
    _Echo.seen = []
    with serving(_Echo) as httpd:
        yield f"http://127.0.0.1:{httpd.server_port}"


def test_an_sdk_request_arrives_whole_and_its_answer_comes_back(url: str) -> None:
    request = HttpRequest("PUT", f"{url}/devstoreaccount1/q/messages?visibilitytimeout=0",
                          headers={"x-ms-version": "2021-02-12", "Content-Type": "application/xml"})
    request.set_bytes_body(b"<QueueMessage/>")
    with CountingTransport("queue", stats=RequestStats()) as transport:
        response = transport.send(request)
    assert response.status_code == 201
    assert response.body() == b"echo:<QueueMessage/>"
    assert response.headers["x-ms-request-id"] == "r-1"
    [seen] = _Echo.seen
    assert seen["method"] == "PUT" and seen["path"] == "/devstoreaccount1/q/messages?visibilitytimeout=0"
    assert seen["body"] == b"<QueueMessage/>"
    assert seen["headers"]["x-ms-version"] == "2021-02-12"
    assert seen["headers"]["Content-Type"] == "application/xml"
    assert seen["headers"]["Accept-Encoding"] == "gzip, deflate", "the session's default headers were dropped"


def test_a_redirect_is_not_followed_for_the_sdk_but_is_when_asked_for(url: str) -> None:
    with CountingTransport("queue", stats=RequestStats()) as transport:
        assert transport.send(HttpRequest("GET", f"{url}/moved")).status_code == 307
    assert [seen["path"] for seen in _Echo.seen] == ["/moved"]
    _Echo.seen.clear()
    response = DirectSession().request("GET", f"{url}/moved", allow_redirects=True)
    assert response.status_code == 201
    assert [seen["path"] for seen in _Echo.seen] == ["/moved", "/here"]
