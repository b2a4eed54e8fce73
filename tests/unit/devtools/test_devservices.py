"""Pure parts of the dev services: ports from the environment, env vars, exports, launch plans."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from flowcraft_celery.devtools.devservices import (
    AZURITE_KEY,
    COSMOS_KEY,
    COSMOS_LAUNCHER,
    Ports,
    ServiceError,
    State,
    env_vars,
    plan,
    render_exports,
)

ROOT = Path("/repo")
ALL = ("azurite-blob", "azurite-queue", "azurite-table", "cosmos", "redis")


def _states(free: set[str]) -> dict[str, State]:
    return {name: State.FREE if name in free else State.ANSWERS for name in ALL}


def test_default_env_vars_point_at_the_standard_emulator_ports() -> None:
    env = env_vars(Ports.from_env({}))
    assert env == {
        "AZURE_STORAGE_CONNECTION_STRING": (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};"
            "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
            "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
            "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
        ),
        "AZURE_COSMOS_CONNECTION_STRING": (f"AccountEndpoint=https://127.0.0.1:8081/;AccountKey={COSMOS_KEY};"),
        "FLOWCRAFT_COSMOS_VERIFY_TLS": "false",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
    }


def test_port_overrides_reach_every_env_var() -> None:
    ports = Ports.from_env(
        {
            "FLOWCRAFT_AZURITE_BLOB_PORT": "20000",
            "FLOWCRAFT_AZURITE_QUEUE_PORT": "20001",
            "FLOWCRAFT_AZURITE_TABLE_PORT": "20002",
            "FLOWCRAFT_COSMOS_PORT": "20081",
            "FLOWCRAFT_REDIS_PORT": " 26379 ",
        }
    )
    assert ports == Ports(20000, 20001, 20002, 20081, 26379)
    env = env_vars(ports)
    storage = env["AZURE_STORAGE_CONNECTION_STRING"]
    assert "BlobEndpoint=http://127.0.0.1:20000/devstoreaccount1;" in storage
    assert "QueueEndpoint=http://127.0.0.1:20001/devstoreaccount1;" in storage
    assert "TableEndpoint=http://127.0.0.1:20002/devstoreaccount1;" in storage
    assert env["AZURE_COSMOS_CONNECTION_STRING"].startswith("AccountEndpoint=https://127.0.0.1:20081/;")
    assert env["REDIS_URL"] == "redis://127.0.0.1:26379/0"


def test_an_empty_override_keeps_the_default() -> None:
    assert Ports.from_env({"FLOWCRAFT_COSMOS_PORT": ""}).cosmos == 8081


@pytest.mark.parametrize("value", ["abc", "0", "65536", "-1", "80.5"])
def test_a_bad_port_override_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ServiceError, match="FLOWCRAFT_REDIS_PORT"):
        Ports.from_env({"FLOWCRAFT_REDIS_PORT": value})


def test_two_services_on_one_port_are_refused() -> None:
    with pytest.raises(ServiceError, match="must differ"):
        Ports.from_env({"FLOWCRAFT_REDIS_PORT": "8081"})


def test_exports_eval_back_to_the_exact_values() -> None:
    env = {"A_CONN": "k=v;x='quoted' $HOME `cmd`;", "B_URL": "redis://127.0.0.1:1/0"}
    text = render_exports(env)
    assert text.splitlines()[1] == "export B_URL='redis://127.0.0.1:1/0'"
    script = text + 'printf "%s\\n" "$A_CONN" "$B_URL"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == list(env.values())


def test_all_free_starts_one_azurite_with_the_documented_command() -> None:
    launches = plan(Ports(), _states(set(ALL)), ROOT, "/usr/bin/redis-server")
    assert [la.key for la in launches] == [
        "azurite-10000-10001-10002",
        "cosmosdb-server-8081",
        "redis-6379",
    ]
    azurite, cosmos, redis = (shlex.join(la.argv) for la in launches)
    assert azurite == (
        "/repo/node_modules/.bin/azurite --inMemoryPersistence --disableTelemetry"
        " --skipApiVersionCheck --silent --blobHost 127.0.0.1 --blobPort 10000"
        " --queueHost 127.0.0.1 --queuePort 10001 --tableHost 127.0.0.1 --tablePort 10002"
    )
    assert cosmos == f"{COSMOS_LAUNCHER} /repo/node_modules/@vercel/cosmosdb-server 8081 127.0.0.1"
    assert redis == ("/usr/bin/redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly yes "
                     "--appendfsync everysec --maxmemory-policy noeviction --daemonize no "
                     "--appenddirname redis-6379-aof")


def test_a_partly_running_azurite_gets_only_its_missing_parts() -> None:
    launches = plan(Ports(), _states({"azurite-queue", "azurite-table"}), ROOT, "redis-server")
    assert [la.key for la in launches] == ["azurite-queue-10001", "azurite-table-10002"]
    assert launches[0].argv[0] == "/repo/node_modules/.bin/azurite-queue"
    assert launches[0].argv[-4:] == ("--queueHost", "127.0.0.1", "--queuePort", "10001")


def test_nothing_is_started_when_everything_answers() -> None:
    assert plan(Ports(), _states(set()), ROOT, "redis-server") == []


def test_custom_ports_name_the_pid_files() -> None:
    ports = Ports(20000, 20001, 20002, 20081, 26379)
    launches = plan(ports, _states({"cosmos", "redis"}), ROOT, "redis-server")
    assert [la.key for la in launches] == ["cosmosdb-server-20081", "redis-26379"]
    assert launches[1].argv[1:3] == ("--port", "26379")
