"""Sending, receiving and deleting queue messages as requests signed here, beside the Azure SDK.

Every node message is sent, received and deleted once. Through the SDK each of those requests
costs 1.6-2 ms of CPU on a 2-core machine (its policies, request building and XML models,
`requests` and `urllib3`); signed here with the account's Shared Key and sent with `http.client`
on a kept-alive connection of the calling thread, about 0.3 ms (bench/README.md). Only the
expected answer is handled here (201 for a send, 200 for a receive, 204 for a delete): anything
else (a throttle, an error, a dropped connection) returns False or None and the caller makes the
same request through the SDK, whose retry policy, outage log and exceptions apply; after a
throttle, a server error, a failed fresh connection or a refused signature this path stands aside
for a while (`standaside`).

Used only with an account key (a SAS or Microsoft Entra ID credential takes the SDK's path), over
plain HTTP or TLS verified against the default store or the environment's CA bundle, and only
where no proxy applies. Each attempt is counted in `STATS` and its answer told to the queue
service's throttle watch, like the SDK's requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import ssl
import xml.etree.ElementTree as ElementTree
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape

from azure.storage.queue import QueueMessage

from . import keptalive
from .httpenv import HttpEnvironment
from .outages import OUTAGES
from .standaside import StandAside
from .stats import STATS, account_endpoint
from .throttling import ThrottleWatch, storage_throttle_kind

logger = logging.getLogger(__name__)

SERVICE = "Azure Queue Storage"


class DirectQueue:
    """Send to, receive from and delete from one Azure queue with requests signed here (see the module doc)."""

    def __init__(self, queue_url: str, account: str, key: bytes, api_version: str,
                 ssl_context: ssl.SSLContext | None, watch: ThrottleWatch | None = None) -> None:
        parts = urlsplit(queue_url)
        self._scheme, self._netloc = parts.scheme, parts.netloc
        self._path = parts.path.rstrip("/") + "/messages"
        self._account = account
        self._key = key
        self._version = api_version
        self._context = ssl_context
        self._endpoint = account_endpoint(queue_url)
        self._watch = watch
        self._aside = StandAside(SERVICE, self._endpoint, "a request signed by the transport",
                                 "set the transport option direct_requests=false")

    @classmethod
    def for_client(cls, client: Any, environment: HttpEnvironment,
                   watch: ThrottleWatch | None = None) -> DirectQueue | None:
        """The direct path for an SDK `QueueClient` (its answers told to `watch`), or None where it
        does not apply (no account key, a proxy)."""
        credential = getattr(client, "credential", None)
        account = getattr(credential, "account_name", None)
        key = getattr(credential, "account_key", None)
        url = str(getattr(client, "url", ""))
        scheme = urlsplit(url).scheme
        if not account or not key or scheme not in ("http", "https") or environment.proxies(url):
            return None
        context = None
        if scheme == "https":
            verify = environment.verify(True)
            context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        try:
            secret = base64.b64decode(key)
        except ValueError:
            return None
        return cls(url, str(account), secret, str(getattr(client, "api_version", "2021-02-12")), context, watch)

    def send(self, text: str, visibility_timeout: int | None = None, ttl: int | None = None) -> bool:
        """Send one message; True when the queue took it, False when the caller must use the SDK."""
        query = {}
        if visibility_timeout:
            query["visibilitytimeout"] = str(visibility_timeout)
        if ttl is not None:
            query["messagettl"] = str(ttl)
        body = f"<QueueMessage><MessageText>{escape(text)}</MessageText></QueueMessage>".encode()
        return self._request("POST", self._path, query, body, 201, "queue.send") is not None

    def receive(self, count: int, visibility_timeout: int) -> list[QueueMessage] | None:
        """Receive up to `count` messages hidden for `visibility_timeout` seconds (their id, pop
        receipt, delivery count and text), or None when the caller must use the SDK."""
        answer = self._request("GET", self._path, {"numofmessages": str(count),
                                                   "visibilitytimeout": str(visibility_timeout)},
                               b"", 200, "queue.receive")
        if answer is None:
            return None
        messages = []
        for item in ElementTree.fromstring(answer).iter("QueueMessage"):
            messages.append(QueueMessage(
                content=item.findtext("MessageText") or "", id=item.findtext("MessageId"),
                pop_receipt=item.findtext("PopReceipt"), dequeue_count=int(item.findtext("DequeueCount") or 1)))
        return messages

    def delete(self, message_id: str, pop_receipt: str) -> bool:
        """Delete one held message; True when deleted, False when the caller must use the SDK
        (which also says why: the message is gone, its pop receipt changed, ...)."""
        return self._request("DELETE", f"{self._path}/{quote(message_id, safe='')}", {"popreceipt": pop_receipt},
                             b"", 204, "queue.delete") is not None

    def _request(self, method: str, path: str, query: dict[str, str], body: bytes, expected: int,
                 kind: str) -> bytes | None:
        """Make one request; its answer's body on the `expected` status, else None."""
        if self._aside.active:
            return None
        STATS.add(kind)
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": self._version}
        if body:
            headers["Content-Type"] = "application/xml; charset=utf-8"
        headers["Authorization"] = f"SharedKey {self._account}:{self._signature(method, path, query, headers, body)}"
        target = path + ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items()) if query else "")
        try:
            response, answer = keptalive.exchange(self._scheme, self._netloc, self._context, method, target,
                                                  body or None, headers)
        except keptalive.Unanswered as exc:
            self._aside.connection_failed(exc.fresh)
            logger.debug("direct %s to %s failed (the SDK takes it): %r", kind, self._endpoint, exc.cause)
            return None
        if self._watch is not None:
            code = response.getheader("x-ms-error-code") or ""
            throttled = storage_throttle_kind(response.status, {"x-ms-error-code": code})
            if throttled is None:
                self._watch.answered()
            else:
                self._watch.throttled(throttled)
        if response.status == expected:
            if OUTAGES.active:
                OUTAGES.answered(SERVICE, self._endpoint)
            return answer
        self._aside.answered(response.status)
        logger.debug("direct %s to %s answered %s (the SDK takes it)", kind, self._endpoint, response.status)
        return None

    def _signature(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                   body: bytes) -> str:
        """The Shared Key signature of a request (Azure Storage's string-to-sign, version 2009-09-19 on)."""
        ms_headers = "".join(f"{name}:{value}\n" for name, value in sorted(
            (name.lower(), value) for name, value in headers.items() if name.lower().startswith("x-ms-")))
        resource = f"/{self._account}{path}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
        length = str(len(body)) if body else ""
        string_to_sign = (f"{method}\n\n\n{length}\n\n{headers.get('Content-Type', '')}\n\n\n\n\n\n\n"
                          f"{ms_headers}{resource}")
        digest = hmac.new(self._key, string_to_sign.encode("utf-8"), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()
