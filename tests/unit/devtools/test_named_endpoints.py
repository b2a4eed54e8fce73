"""`services status` checks the endpoints the app's settings name, not always the default dev ports."""

from __future__ import annotations

import json
import socket

from click.testing import CliRunner

from flowcraft_celery.cli.main import main
from flowcraft_celery.devtools.named_endpoints import named_endpoints


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_settings_name_storage_cosmos_broker_and_redis_endpoints_without_secrets() -> None:
    found = named_endpoints({
        "AZURE_STORAGE_CONNECTION_STRING": "AccountName=acct;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net",
        "AZURE_COSMOS_CONNECTION_STRING": "AccountEndpoint=https://db.documents.azure.com:443/;AccountKey=k;",
        "REDIS_URL": "rediss://:password@cache.redis.cache.windows.net:6380/0",
    })
    assert {name: (e.url, e.setting) for name, e in found.items()} == {
        "azurite-blob": ("https://acct.blob.core.windows.net:443", "AZURE_STORAGE_CONNECTION_STRING"),
        "azurite-queue": ("https://acct.queue.core.windows.net:443", "AZURE_STORAGE_CONNECTION_STRING"),
        "azurite-table": ("https://acct.table.core.windows.net:443", "AZURE_STORAGE_CONNECTION_STRING"),
        "cosmos": ("https://db.documents.azure.com:443", "AZURE_COSMOS_CONNECTION_STRING"),
        "redis": ("rediss://cache.redis.cache.windows.net:6380", "REDIS_URL"),
    }
    broker = named_endpoints({"CELERY_BROKER_URL": "azurequeue://KEY@http://127.0.0.1:20001/devstoreaccount1"})
    assert broker["azurite-queue"].url == "http://127.0.0.1:20001" and broker["azurite-queue"].setting == \
        "CELERY_BROKER_URL"
    assert named_endpoints({}) == {}


def test_services_status_probes_what_the_environment_names() -> None:
    redis_port, queue_port = free_port(), free_port()
    env = {"REDIS_URL": f"redis://:secret@127.0.0.1:{redis_port}/0",
           "AZURE_STORAGE_CONNECTION_STRING": f"AccountName=devstoreaccount1;AccountKey=a2V5;"
                                              f"QueueEndpoint=http://127.0.0.1:{queue_port}/devstoreaccount1;",
           "AZURE_COSMOS_CONNECTION_STRING": None}  # whatever the shell running the tests exports
    result = CliRunner().invoke(main, ["services", "status", "--json"], env=env)
    assert result.exit_code == 1, result.output  # nothing listens there
    by_service = {r["service"]: r for r in json.loads(result.output)}
    assert by_service["redis"] == {"service": "redis", "url": f"redis://127.0.0.1:{redis_port}", "state": "free",
                                   "setting": "REDIS_URL", "note": "(from REDIS_URL)"}
    assert by_service["azurite-queue"]["url"] == f"http://127.0.0.1:{queue_port}"
    assert by_service["cosmos"]["setting"] is None  # no setting names it: the dev port
    assert "secret" not in result.output
    text = CliRunner().invoke(main, ["services", "status"], env=env).output
    assert f"redis://127.0.0.1:{redis_port}" in text and "(from REDIS_URL)" in text

