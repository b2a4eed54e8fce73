"""No password, account key or token of the settings shows in what Celery prints about them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from celery.worker.control import Panel

from flowcraft_celery.distributed.app import create_app
from flowcraft_celery.distributed.core.secrets import MASK, Masked, censor, censor_inspect_replies, mask_text
from tests.unit.distributed import secret_settings

PLANTED = (secret_settings.REDIS_PASSWORD, secret_settings.STORAGE_KEY, secret_settings.COSMOS_KEY)


def assert_clean(text: str) -> None:
    for secret in PLANTED:
        assert secret not in text


@pytest.mark.parametrize(("text", "expected"), [
    ("redis://:hunter2@host:6379/0", f"redis://:{MASK}@host:6379/0"),
    ("rediss://user:hunter2@host/1", f"rediss://user:{MASK}@host/1"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("AccountEndpoint=https://a:443/;AccountKey=abc==;", f"AccountEndpoint=https://a:443/;AccountKey={MASK};"),
    ("Endpoint=sb://x/;SharedAccessKeyName=n;SharedAccessKey=k1", f"Endpoint=sb://x/;SharedAccessKeyName=n;SharedAccessKey={MASK}"),
    ("azurequeue://KEY123@https://acct.queue.core.windows.net", f"azurequeue://{MASK}@https://acct.queue.core.windows.net"),
    ("azurequeue://DefaultAzureCredential@https://acct.queue.core.windows.net",
     "azurequeue://DefaultAzureCredential@https://acct.queue.core.windows.net"),
    ("https://acct.blob.core.windows.net/c?sv=2020&sig=s3cr%2Bt&se=x", f"https://acct.blob.core.windows.net/c?sv=2020&sig={MASK}&se=x"),
])
def test_mask_text_hides_the_credential_and_keeps_the_rest(text: str, expected: str) -> None:
    assert mask_text(text) == expected


def test_a_masked_value_is_the_real_string_to_code_but_masked_in_its_repr() -> None:
    value = Masked("redis://:hunter2@host/0")
    assert value == "redis://:hunter2@host/0"
    assert f"{value}" == "redis://:hunter2@host/0"
    assert "hunter2" not in repr(value)
    assert "hunter2" not in repr({"url": value})


def test_celery_report_and_settings_show_no_planted_secret() -> None:
    app = create_app("tests.unit.distributed.secret_settings")
    report = app.bugreport()
    assert "flowcraft_redis_url" in report
    assert "redis.example:6380" in report  # the URL is still shown, without its password
    assert_clean(report)
    assert_clean(app.conf.humanize(with_defaults=True))
    # the code still gets the real values
    assert secret_settings.REDIS_PASSWORD in str(app.conf.flowcraft_redis_url)
    assert secret_settings.STORAGE_KEY in str(app.conf.broker_transport_options["connection_string"])


def test_inspect_conf_and_report_replies_show_no_planted_secret() -> None:
    app = create_app("tests.unit.distributed.secret_settings")
    censor_inspect_replies(Panel)
    state = SimpleNamespace(app=app)
    conf = Panel.data["conf"](state, with_defaults=True)
    assert conf["flowcraft_redis_url"] == f"redis://:{MASK}@redis.example:6380/0"
    assert_clean(json.dumps(conf))
    assert_clean(json.dumps(Panel.data["report"](state)))


def test_censor_masks_secret_named_keys_and_credentials_at_any_depth() -> None:
    reply = {"broker": {"hostname": "x", "password": "p4ss", "transport_options": {
        "connection_string": "AccountName=a;AccountKey=k3y;"}}, "args": ["redis://:pw@h/0"]}
    text = json.dumps(censor(reply))
    assert "p4ss" not in text and "k3y" not in text and ":pw@" not in text
