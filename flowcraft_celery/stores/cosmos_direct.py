"""Creating Cosmos DB items with requests signed here, beside the Cosmos SDK.

Every node execution records its output with one item create. Through the SDK that request costs
about 1 ms of CPU (its pipeline and policies, `requests` and `urllib3`); signed here with the
account key and sent with `http.client` on a kept-alive connection of the calling thread, about
0.2 ms (bench/README.md). Only the expected answers are handled here: 201 (created) and 409 (an
item with that id exists). Anything else (a throttle, an error, a refused signature, a dropped
connection) returns None and the caller makes the same create through the SDK, whose retry
policy, throttle handling and exceptions apply; a create whose connection dropped after sending
may have been applied, and the SDK's repeat then answers 409, which the caller reads as "recorded
already" (an output item is created once, by whichever copy comes first). After a throttle, a
server error, a failed fresh connection or a refused signature this path stands aside for a while
(`transports.azurequeue.standaside`).

Session consistency: each answer's session token goes to the SDK client's session container, as
the SDK does with its own writes, so the SDK's later reads in this process see the write.

Used only with an account key (a Microsoft Entra ID credential takes the SDK's path), over plain
HTTP or TLS (verified unless the client was built without verification, as for the emulator),
and only where no proxy applies. Each request is counted as `docs:create` and its answer told to
the Cosmos DB throttle watch, like the SDK's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import ssl
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, urlsplit

from azure.cosmos import ContainerProxy, CosmosClient

from flowcraft_celery.stores.cosmos_client import COSMOS_WATCH, count_request, tls_context
from transports.azurequeue import HttpEnvironment, StandAside, cosmos_throttle_kind, keptalive

logger = logging.getLogger(__name__)

#: The REST API version the requests name (the SDK's own).
API_VERSION = "2020-07-15"
SESSION_TOKEN = "x-ms-session-token"


def master_key_authorization(key: bytes, verb: str, resource_type: str, resource_link: str, date: str) -> str:
    """The `authorization` header of a request signed with the account key (Cosmos DB's master-key
    token: the verb, resource type, resource link and date, HMAC-SHA256), URL-encoded."""
    text = f"{verb.lower()}\n{resource_type.lower()}\n{resource_link}\n{date.lower()}\n\n"
    signature = base64.b64encode(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()).decode()
    return quote(f"type=master&ver=1.0&sig={signature}", safe="")


class DirectCreates:
    """Create items of one container with requests signed here (see the module doc)."""

    def __init__(self, client: CosmosClient, container_link: str, key: bytes,
                 ssl_context: ssl.SSLContext | None) -> None:
        connection = client.client_connection
        parts = urlsplit(str(connection.url_connection))
        self._scheme, self._netloc = parts.scheme, parts.netloc
        self._endpoint = f"{parts.scheme}://{parts.netloc}/"
        self._connection = connection
        self._link = container_link.strip("/")
        self._path = f"/{self._link}/docs"
        self._key = key
        self._context = ssl_context
        self._consistency = connection.default_headers.get("x-ms-consistency-level")
        self._aside = StandAside("Cosmos DB", self._endpoint, "an item create signed by flowcraft",
                                 "set FLOWCRAFT_DIRECT_COSMOS_REQUESTS=false")

    @classmethod
    def for_container(cls, client: CosmosClient, container: ContainerProxy,
                      environment: HttpEnvironment | None = None) -> DirectCreates | None:
        """The direct path for creates in `container`, or None where it does not apply (no
        account key, a proxy, an endpoint that is not HTTP(S))."""
        connection = client.client_connection
        master_key = getattr(connection, "master_key", None)
        url = str(getattr(connection, "url_connection", ""))
        scheme = urlsplit(url).scheme
        environment = environment or HttpEnvironment()
        if not master_key or scheme not in ("http", "https") or environment.proxies(url):
            return None
        try:
            key = base64.b64decode(master_key)
        except ValueError:
            return None
        context = None
        if scheme == "https":
            bundle = environment.verify(True)
            context = tls_context(not connection.connection_policy.DisableSSLVerification,
                                  bundle if isinstance(bundle, str) else None)
        return cls(client, container.container_link, key, context)

    def create(self, item: Mapping[str, Any], partition_key: str) -> bool | None:
        """Create `item` in partition `partition_key`: True when created, False when an item with
        its id exists, None when the caller must make the create through the SDK."""
        if self._aside.active:
            return None
        count_request("docs:create")
        date = formatdate(usegmt=True)
        headers = {
            "authorization": master_key_authorization(self._key, "post", "docs", self._link, date),
            "x-ms-date": date, "x-ms-version": API_VERSION,
            "x-ms-documentdb-partitionkey": json.dumps([partition_key]),
            "Content-Type": "application/json", "Accept": "application/json",
        }
        if self._consistency:
            headers["x-ms-consistency-level"] = self._consistency
        body = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        try:
            response, answer = keptalive.exchange(self._scheme, self._netloc, self._context, "POST", self._path,
                                                  body, headers)
        except keptalive.Unanswered as exc:
            self._aside.connection_failed(exc.fresh)
            logger.debug("direct create in %s failed (the SDK takes it): %r", self._link, exc.cause)
            return None
        answered = {name.lower(): value for name, value in response.getheaders()}
        throttled = cosmos_throttle_kind(response.status, answered)
        if throttled is None:
            COSMOS_WATCH.answered()
        else:
            COSMOS_WATCH.throttled(throttled)
        if response.status == 201:
            self._keep_session(answer, answered)
            return True
        if response.status == 409:
            return False
        self._aside.answered(response.status)
        logger.debug("direct create in %s answered %s (the SDK takes it)", self._link, response.status)
        return None

    def _keep_session(self, answer: bytes, headers: Mapping[str, str]) -> None:
        """Hand the write's session token to the SDK client's session container (Session consistency)."""
        session = getattr(self._connection, "session", None)
        if session is None or SESSION_TOKEN not in headers:
            return
        try:
            session.update_session(self._connection, json.loads(answer), dict(headers))
        except Exception as exc:  # the SDK's session container changed shape: its reads lose nothing else
            logger.warning("could not hand a Cosmos DB session token to the SDK (%r); this process's reads may "
                           "not see its own writes at once", exc)
