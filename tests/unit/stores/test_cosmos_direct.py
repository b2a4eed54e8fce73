"""Output creates signed by flowcraft: the SDK's signature, its session tokens, and the SDK's path
whenever the answer is not "created" or "exists"."""

from __future__ import annotations

import json
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import pytest
from azure.cosmos import _session, auth
from azure.cosmos.documents import ConnectionPolicy

from flowcraft_celery.stores.cosmos_client import request_counts, reset_request_counts
from flowcraft_celery.stores.cosmos_direct import DirectCreates, master_key_authorization
from tests.unit.transports.http_support import serving
from transports.azurequeue import HttpEnvironment

KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU9DDJf5/2oMqLl6JVXUEHnCYqC7gsXzlzUm7xzy2Pp1FHpWw=="
LINK = "dbs/flowcraft/colls/context"


class Answering(BaseHTTPRequestHandler):
    """Answers every POST with `status` (and `headers`, `body`), keeping what it was sent."""

    status = 201
    headers_out: dict[str, str] = {}
    body_out = b"{}"
    seen: list[tuple[str, dict[str, str], Any]] = []

    def do_POST(self) -> None:
        sent = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append((self.path, dict(self.headers), json.loads(sent)))
        self.send_response(self.status)
        for name, value in self.headers_out.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(self.body_out)))
        self.end_headers()
        self.wfile.write(self.body_out)

    def log_message(self, *_: object) -> None:
        pass


class Created(Answering):
    """Creates every item, with a session token as Cosmos DB's Session consistency answers."""

    headers_out = {"x-ms-session-token": "0:-1#17", "x-ms-alt-content-path": LINK}
    body_out = json.dumps({"id": "out:a:0", "_self": "dbs/AAA=/colls/AAAAAA==/docs/AAAAAAAAAAA=/"}).encode()


class Exists(Answering):
    status = 409


class Throttled(Answering):
    status = 429
    headers_out = {"x-ms-retry-after-ms": "50"}


def client(port: int, key: str | None = KEY, session: Any = None) -> Any:
    """A stand-in for the SDK's CosmosClient: the connection attributes the direct path reads."""
    url = f"http://127.0.0.1:{port}/"
    policy = ConnectionPolicy()
    connection = SimpleNamespace(
        master_key=key, url_connection=url, connection_policy=policy,
        default_headers={"x-ms-consistency-level": "Session"}, session=session,
        _routing_map_provider=SimpleNamespace(_collection_routing_map_by_item={}))
    return SimpleNamespace(client_connection=connection)


def direct_for(port: int, **kwargs: Any) -> DirectCreates | None:
    return DirectCreates.for_container(client(port, **kwargs), SimpleNamespace(container_link=LINK),  # type: ignore[arg-type]
                                       HttpEnvironment())


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    Answering.seen = []


def test_the_signature_is_the_one_the_cosmos_sdk_makes_for_the_same_request() -> None:
    date = formatdate(usegmt=True)
    ours = master_key_authorization(__import__("base64").b64decode(KEY), "post", "docs", LINK, date)
    sdks = auth._get_authorization_header(SimpleNamespace(master_key=KEY, resource_tokens=None), "post",
                                          f"/{LINK}/docs", LINK, True, "docs", {"x-ms-date": date})
    assert unquote(ours) == sdks


def test_a_created_item_is_sent_compact_to_its_partition_and_its_session_token_kept_by_the_sdk() -> None:
    session = _session.Session("http://127.0.0.1/")
    reset_request_counts()
    with serving(Created) as httpd:
        direct = direct_for(httpd.server_address[1], session=session)
        assert direct is not None
        assert direct.create({"id": "out:a:0", "runId": "r1", "output": "<ü & é>"}, "r1") is True
    [(path, headers, body)] = Created.seen
    assert path == f"/{LINK}/docs"
    assert headers["x-ms-documentdb-partitionkey"] == '["r1"]'
    assert body == {"id": "out:a:0", "runId": "r1", "output": "<ü & é>"}
    assert request_counts() == {"docs:create": 1}
    tokens = session.session_container.rid_to_session_token
    assert [token.convert_to_string() for by_range in tokens.values() for token in by_range.values()] == ["-1#17"]


def test_an_item_that_exists_is_told_apart_from_one_the_sdk_must_create() -> None:
    with serving(Exists) as httpd:
        direct = direct_for(httpd.server_address[1])
        assert direct is not None
        assert direct.create({"id": "x", "runId": "r1"}, "r1") is False


def test_a_throttled_create_goes_to_the_sdk_and_the_next_ones_too_for_a_while() -> None:
    with serving(Throttled) as httpd:
        direct = direct_for(httpd.server_address[1])
        assert direct is not None
        assert direct.create({"id": "x", "runId": "r1"}, "r1") is None
        assert direct.create({"id": "y", "runId": "r1"}, "r1") is None
    assert len(Throttled.seen) == 1, "a create went out while the SDK was to make them"


class CreatedThenClosed(Answering):
    """Creates every item on a kept-alive HTTP/1.1 connection, then closes that connection (as a
    server does with one left idle)."""

    protocol_version = "HTTP/1.1"
    status = 201

    def do_POST(self) -> None:
        super().do_POST()
        self.close_connection = True


def test_a_create_on_a_connection_the_server_closed_while_idle_is_sent_again_on_a_new_one() -> None:
    with serving(CreatedThenClosed) as httpd:
        direct = direct_for(httpd.server_address[1], session=SimpleNamespace(update_session=lambda *_: None))
        assert direct is not None
        assert [direct.create({"id": f"out:{i}", "runId": "r1"}, "r1") for i in range(3)] == [True, True, True]
    assert [sent["id"] for _, _, sent in CreatedThenClosed.seen] == ["out:0", "out:1", "out:2"]


def test_a_closed_port_is_no_exception_and_the_sdk_makes_the_create() -> None:
    with serving(Created) as httpd:
        port = httpd.server_address[1]
    direct = direct_for(port)
    assert direct is not None
    assert direct.create({"id": "x", "runId": "r1"}, "r1") is None


def test_without_an_account_key_or_behind_a_proxy_every_create_goes_through_the_sdk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert direct_for(8081, key=None) is None
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    assert direct_for(8081) is None


class Refused(Answering):
    status = 403


def test_a_refused_signature_is_one_warning_naming_the_setting_and_the_sdk_creates_from_then_on(
        caplog: pytest.LogCaptureFixture) -> None:
    with serving(Refused) as httpd:
        direct = direct_for(httpd.server_address[1])
        assert direct is not None
        with caplog.at_level("WARNING"):
            assert direct.create({"id": "x", "runId": "r1"}, "r1") is None
            assert direct.create({"id": "y", "runId": "r1"}, "r1") is None
    assert len(Refused.seen) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "FLOWCRAFT_DIRECT_COSMOS_REQUESTS=false" in warnings[0], warnings
