"""TLS Redis (`rediss://` with a test CA) for the stores, the transport's wake-up/control lane and
beat; Redis with Microsoft Entra ID through redis-entraid's credential provider.

A private `redis-server` (Debian's has TLS built in) serves TLS only, with a certificate from a
throw-away test CA; Azurite and the Cosmos emulator are the shared dev services (never stopped
here). Entra ID is stood in for by a TokenCredential handing out a JWT whose `oid` is an ACL user
of that Redis, the token its password: the same AUTH Azure Cache for Redis receives.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
from azure.core.credentials import AccessToken

from flowcraft_celery.devtools import background, devservices
from flowcraft_celery.devtools.testcerts import CertFiles, make_certs
from flowcraft_celery.distributed.core.runtime import build_runtime
from flowcraft_celery.stores.faults import InfrastructureError
from tests.integration.faults import fault_nodes
from tests.integration.faults.kit import assert_recorded_once, fault_kit
from tests.integration.faults.private import free_ports
from transports.azurequeue.redisauth import redis_from_url

pytestmark = pytest.mark.integration

OID = "0b7c6a52-5b7e-4c55-8f1e-3f8f8e7d7a11"


@dataclass
class TlsRedis:
    port: int
    certs: CertFiles

    def url(self, query: str = "", userinfo: str = "") -> str:
        return f"rediss://{userinfo}127.0.0.1:{self.port}/0" + (f"?{query}" if query else "")

    @property
    def verified(self) -> str:
        """The URL that verifies the server against the test CA."""
        return self.url(f"ssl_ca_certs={self.certs.ca}")

    def admin(self) -> redis.Redis:
        return redis.Redis.from_url(self.verified)


#: Workers import this module to build the credential: the token must be the same in every process.
_SIGNING_KEY = "test-signing-key-not-a-secret-0123456789"
_EXPIRES = 4102444800  # 2100-01-01


def _token(oid: str = OID) -> str:
    return jwt.encode({"oid": oid, "exp": _EXPIRES}, _SIGNING_KEY, algorithm="HS256")


class EntraCredential:
    """Stands in for DefaultAzureCredential: a fixed JWT for Azure Cache for Redis's scope."""

    token = _token()

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


class WrongEntraCredential:
    """A token for an identity the cache has no access policy for."""

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        return AccessToken(_token("11111111-2222-3333-4444-555555555555"), int(time.time()) + 3600)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    folder: Path = tmp_path_factory.mktemp("tls-redis")
    certs = make_certs(folder / "certs")
    port = free_ports(1)[0]
    key = f"redis-tls-{port}"
    argv = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", devservices.HOST,
            "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key),
            "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
            "--daemonize", "no"]
    background.start(folder, key, argv)
    try:
        server = TlsRedis(port, certs)
        deadline = time.monotonic() + 30
        while True:
            try:
                server.admin().ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError(background.log_tail(background.log_path(folder, key))) from None
                time.sleep(0.2)
        server.admin().execute_command("ACL", "SETUSER", OID, "on", f">{EntraCredential.token}", "~*", "&*",
                                       "+@all")
        yield server
    finally:
        background.stop(folder, key, "redis-server", grace=5.0)


def test_rediss_verifies_the_server_against_the_configured_ca_or_not_at_all(tls_redis: TlsRedis) -> None:
    assert redis_from_url(tls_redis.verified).ping()
    assert redis_from_url(tls_redis.url("ssl_cert_reqs=none")).ping()
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis_from_url(tls_redis.url(), socket_connect_timeout=5).ping()  # system CAs do not know the test CA


def test_a_redis_with_an_unknown_ca_fails_in_one_line_naming_redis(tls_redis: TlsRedis) -> None:
    runtime = build_runtime({**_cosmos_conf(), "flowcraft_redis_url": tls_redis.url(), "flowcraft_redis_timeout": 5})
    with pytest.raises(InfrastructureError) as caught:
        runtime.timeline.counters()
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"Redis at {tls_redis.url()} unavailable"), message


def test_redis_with_an_entra_credential_authenticates_as_the_tokens_object_id(tls_redis: TlsRedis) -> None:
    credential = EntraCredential()
    client = redis_from_url(tls_redis.verified, credential=credential)
    assert client.execute_command("ACL", "WHOAMI") in (OID, OID.encode())
    assert set(credential.scopes) == {"https://redis.azure.com/.default"}


def test_a_wrong_entra_credential_fails_in_one_line_naming_redis(tls_redis: TlsRedis) -> None:
    os.environ["FLOWCRAFT_REDIS_CREDENTIAL"] = f"{__name__}:WrongEntraCredential"
    try:
        runtime = build_runtime({**_cosmos_conf(), "flowcraft_redis_url": tls_redis.verified,
                                 "flowcraft_redis_timeout": 5})
        with pytest.raises(InfrastructureError) as caught:
            runtime.timeline.counters()
    finally:
        os.environ.pop("FLOWCRAFT_REDIS_CREDENTIAL")
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and message.startswith("Redis at rediss://127.0.0.1:"), message
    assert "invalid username-password pair" in message or "WRONGPASS" in message, message


@pytest.mark.timeout(150)
def test_a_workflow_runs_with_stores_transport_and_beat_on_tls_redis_with_entra(
        tls_redis: TlsRedis, tmp_path: Path) -> None:
    env = {**devservices.env_vars(devservices.Ports.from_env()), "REDIS_URL": tls_redis.verified,
           "FLOWCRAFT_REDIS_CREDENTIAL": f"{__name__}:EntraCredential", "FLOWCRAFT_RECONCILE_INTERVAL": "2"}
    tls_redis.admin().execute_command("ACL", "SETUSER", "default", "off")  # only the Entra identity gets in
    try:
        with fault_kit(env, tmp_path, "tlsredis") as kit:
            group = kit.group()
            group.worker(concurrency=2)
            group.beat()
            group.wait_ready(90)
            run_id = kit.start("ft-fan")[0]
            doc = kit.client.wait(run_id, 90)
            assert doc["status"] == "completed", doc.get("errors")
            assert kit.calls(run_id) == dict.fromkeys(fault_nodes.wide_nodes(), 1)
            assert_recorded_once(kit, run_id, fault_nodes.wide_nodes())
            deadline = time.monotonic() + 30
            while "reconcile: {" not in kit.logs():  # beat's schedule reached a worker over the TLS lane
                assert time.monotonic() < deadline, "no reconcile pass from beat"
                time.sleep(0.5)
    finally:
        _entra_admin(tls_redis).execute_command("ACL", "SETUSER", "default", "on")


def _entra_admin(server: TlsRedis) -> redis.Redis:
    return redis_from_url(server.verified, credential=EntraCredential())


def _cosmos_conf() -> dict[str, Any]:
    env = devservices.env_vars(devservices.Ports.from_env())
    return {"cosmos_connection_string": env["AZURE_COSMOS_CONNECTION_STRING"], "cosmos_verify_tls": False,
            "cosmos_database": "flowcraft-tls-redis-tests"}
