"""Cosmos DB with Microsoft Entra ID: only the account endpoint configured, a TokenCredential signs.

The emulator accepts a bearer token (it checks none), so the SDK's identity code path (AAD
authorization header built from the credential's token) runs for real against it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from flowcraft_celery.devtools import devservices
from flowcraft_celery.distributed.core.runtime import build_runtime
from flowcraft_celery.stores.cosmos_client import ensure_container, get_client, read_item_or_none
from flowcraft_celery.stores.faults import InfrastructureError

pytestmark = pytest.mark.integration

ENDPOINT_ONLY = f"AccountEndpoint=https://{devservices.HOST}:{devservices.Ports.from_env().cosmos}/;"


class TestCredential:
    """A TokenCredential that hands out a fixed token and remembers the scopes asked for."""

    __test__ = False

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken("test-token", int(time.time()) + 3600)


class WrongCredential:
    """A TokenCredential Entra ID refuses (as a wrong client secret or missing role would be)."""

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        raise ClientAuthenticationError("AADSTS7000215: Invalid client secret provided.")


def test_cosmos_with_only_the_endpoint_authenticates_with_the_token_credential() -> None:
    credential = TestCredential()
    client = get_client(ENDPOINT_ONLY, verify_tls=False, credential=credential)
    database = f"ident-{uuid.uuid4().hex[:8]}"
    try:
        container = ensure_container(client, database, "items", "/runId")
        container.upsert_item({"id": "a", "runId": "r", "v": 1})
        assert read_item_or_none(container, "a", "r")["v"] == 1
    finally:
        client.delete_database(database)
    assert credential.scopes and all(s.endswith("/.default") for s in credential.scopes), credential.scopes


def test_a_wrong_cosmos_credential_fails_in_one_line_naming_the_service() -> None:
    conf = {"cosmos_connection_string": ENDPOINT_ONLY, "cosmos_verify_tls": False,
            "cosmos_credential": WrongCredential(), "flowcraft_redis_url": "redis://127.0.0.1:6379/0"}
    with pytest.raises(InfrastructureError) as caught:
        build_runtime(conf)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"Cosmos DB at https://{devservices.HOST}:") and "Invalid client secret" in message
