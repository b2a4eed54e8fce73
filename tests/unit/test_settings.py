"""One settings object: each setting's variable, Celery key and default written once, checked once, with
errors naming the setting; `celeryconfig.py` fills the Celery configuration from it."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import fields, replace
from types import ModuleType

import pytest

from flowcraft_celery.settings import SPECS, SettingError, Settings


@pytest.fixture
def celeryconfig(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """`celeryconfig` re-read under the test's environment, and again after it."""
    import celeryconfig as module

    yield module
    monkeypatch.undo()
    importlib.reload(module)


def test_every_setting_has_one_spec_and_its_default() -> None:
    assert [f.name for f in fields(Settings)] == list(SPECS)
    assert all(f.default == SPECS[f.name].default for f in fields(Settings))


def test_an_empty_environment_and_an_empty_configuration_give_the_defaults() -> None:
    assert Settings.from_env({}) == Settings() == Settings.from_conf({})


def test_celeryconfig_writes_every_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                                celeryconfig: ModuleType) -> None:
    env = {"REDIS_URL": "redis://elsewhere:6380/2", "FLOWCRAFT_STALL_SECONDS": "12.5", "FLOWCRAFT_FANOUT_GROUP": "3",
           "FLOWCRAFT_QUEUE_PREFIX": "p-", "FLOWCRAFT_DEFAULT_QUEUE": "work", "FLOWCRAFT_TASK_EVENTS": "no",
           "FLOWCRAFT_BLUEPRINTS": "a.json, flows/", "FLOWCRAFT_RETENTION_DAYS": "0"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    importlib.reload(celeryconfig)
    settings = Settings.from_env()
    assert Settings.from_conf(vars(celeryconfig)) == replace(settings, reconcile_queue=settings.reconcile_queue_name)
    assert (settings.redis_url, settings.stall_seconds, settings.fanout_group) == ("redis://elsewhere:6380/2", 12.5, 3)
    assert settings.blueprints == ("a.json", "flows/") and settings.task_events is False
    assert (settings.deployment, settings.reconcile_queue_name, settings.retention_seconds) == ("p-work",
                                                                                               "work-reconcile", 0)
    assert celeryconfig.broker_transport_options["redis_url"] == "redis://elsewhere:6380/2"


@pytest.mark.parametrize(("name", "value", "said"), [
    ("FLOWCRAFT_STALL_SECONDS", "0", "FLOWCRAFT_STALL_SECONDS: '0' is not a positive number; unset it for the "
                                     "default (60)"),
    ("FLOWCRAFT_STALL_SECONDS", "soon", "'soon' is not a number"),
    ("FLOWCRAFT_REDIS_TIMEOUT", "-1", "'-1' is not a positive number"),
    ("FLOWCRAFT_FANOUT_GROUP", "0", "'0' is not a whole number of at least 1"),
    ("FLOWCRAFT_INLINE_DEPTH", "1.5", "'1.5' is not a whole number"),
    ("FLOWCRAFT_MAX_NODE_CRASHES", "0", "'0' is not a whole number of at least 1"),
    ("FLOWCRAFT_RETENTION_DAYS", "inf", "'inf' is not a number >= 0"),
])
def test_a_wrong_variable_is_named_with_its_default(name: str, value: str, said: str) -> None:
    with pytest.raises(SettingError) as caught:
        Settings.from_env({name: value})
    assert said in str(caught.value) and caught.value.setting == name


@pytest.mark.parametrize(("conf", "said"), [
    ({"flowcraft_stall_seconds": 0}, "flowcraft_stall_seconds must be a positive number, got 0"),
    ({"flowcraft_inline_depth": True}, "flowcraft_inline_depth must be a whole number >= 0, got True"),
    ({"flowcraft_redis_url": 6379}, "flowcraft_redis_url must be text, got 6379"),
    ({"broker_transport_options": {"visibility_timeout": 0}},
     "broker_transport_options.visibility_timeout must be a whole number of at least 1, got 0"),
])
def test_a_wrong_configuration_value_is_named_not_mapped_to_a_default(conf: dict[str, object], said: str) -> None:
    with pytest.raises(SettingError) as caught:
        Settings.from_conf(conf)
    assert str(caught.value).startswith(said), str(caught.value)


ACCOUNT = ("DefaultEndpointsProtocol=http;AccountName=acct{n};AccountKey=c2VjcmV0{n}0=;"
           "QueueEndpoint=http://127.0.0.1:1/acct{n}")


def test_further_storage_accounts_reach_the_transport_masked(monkeypatch: pytest.MonkeyPatch,
                                                              celeryconfig: ModuleType) -> None:
    entries = [ACCOUNT.format(n=1), "azurequeue://DefaultAzureCredential@https://acct2.queue.core.windows.net"]
    monkeypatch.setenv("FLOWCRAFT_STORAGE_ACCOUNTS", "\n".join(entries) + "\n")
    importlib.reload(celeryconfig)
    passed = celeryconfig.broker_transport_options["storage_accounts"]
    assert passed == entries and "secret" not in repr(passed) and "acct2" not in repr(passed)
    assert Settings.from_conf(vars(celeryconfig)).storage_accounts == tuple(entries)


@pytest.mark.parametrize("bad", ["hunter2", "AccountName=hunter2", "azurequeue://hunter2"])
def test_a_storage_account_that_cannot_work_is_named_by_its_number_never_shown(bad: str) -> None:
    with pytest.raises(SettingError) as caught:
        Settings.from_env({"FLOWCRAFT_STORAGE_ACCOUNTS": f"{ACCOUNT.format(n=1)} {bad}"})
    said = str(caught.value)
    assert said.startswith("FLOWCRAFT_STORAGE_ACCOUNTS: entry 2 (storage account 2) is not usable: "), said
    assert "hunter2" not in said and "c2VjcmV0" not in said
    with pytest.raises(SettingError, match=r"^broker_transport_options.storage_accounts: entry 1 "):
        Settings.from_conf({"broker_transport_options": {"storage_accounts": [bad]}})
