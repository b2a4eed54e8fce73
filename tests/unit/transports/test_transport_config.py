"""Broker URL forms, secret masking, options and request classification."""

from __future__ import annotations

import pytest
from kombu import Connection

import transports  # noqa: F401
from transports.azurequeue.auth import Secret, masked_url, split_url
from transports.azurequeue.options import Options
from transports.azurequeue.stats import RequestStats, blob_operation, queue_operation

URL = "https://acct.queue.core.windows.net"


def test_alias_is_registered_on_import() -> None:
    from transports.azurequeue import Transport

    assert Connection("azurequeue://").transport_cls == "azurequeue"
    assert Connection("azurequeue://").get_transport_cls() is Transport


def test_url_forms_split_into_credential_and_account_url() -> None:
    assert split_url("azurequeue://") == ("", "")
    assert split_url(f"azurequeue://a/b+c==@{URL}") == ("a/b+c==", URL)
    assert split_url(f"azurequeue://DefaultAzureCredential@{URL}")[0] == "DefaultAzureCredential"
    with pytest.raises(ValueError, match="azurequeue://"):
        split_url("azurequeue://no-account-url")


def test_secrets_are_masked_everywhere_a_url_is_shown() -> None:
    key_url = f"azurequeue://s3cr/et+key==@{URL}"
    assert masked_url(key_url) == f"azurequeue://**@{URL}"
    assert masked_url(key_url, include_password=True) == key_url
    conn = Connection(key_url)
    assert "s3cr" not in repr(conn) and "s3cr" not in conn.as_uri()
    sas_url = f"azurequeue://sv=2024&sig=abc%2F@{URL}"
    assert "sig=" not in Connection(sas_url).as_uri()
    assert repr(Secret("AccountKey=zzz")) == "'********'"


def test_options_defaults_conversion_and_bounds() -> None:
    options = Options.from_transport_options({"visibility_timeout": "45", "other": 1})
    assert options.visibility_timeout == 45
    assert options.max_polling_interval == 8.0
    assert options.stale_after == 180.0
    with pytest.raises(ValueError):
        Options.from_transport_options({"max_messages_per_poll": 33})
    with pytest.raises(ValueError):
        Options.from_transport_options({"visibility_timeout": 0})
    assert options.redis_url is None
    with_redis = Options.from_transport_options({"redis_url": "redis://h:6379/0", "queue_name_prefix": "p-"})
    assert with_redis.redis_namespace == "azurequeue:p-"
    with pytest.raises(ValueError, match="gather_seconds"):
        Options.from_transport_options({"gather_seconds": -1})


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/acct/q/messages", "send"),
        ("GET", "/acct/q/messages?numofmessages=32", "receive"),
        ("GET", "/acct/q/messages?peekonly=true", "peek"),
        ("DELETE", "/acct/q/messages/id1?popreceipt=x", "delete"),
        ("PUT", "/acct/q/messages/id1?popreceipt=x", "update"),
        ("DELETE", "/acct/q/messages", "clear"),
        ("GET", "/acct?comp=list&include=metadata", "list"),
        ("PUT", "/acct/q?comp=metadata", "set_metadata"),
        ("GET", "/acct/q?comp=metadata", "get_properties"),
        ("PUT", "/acct/q", "create_queue"),
        ("DELETE", "/acct/q", "delete_queue"),
    ],
)
def test_queue_requests_are_named(method: str, path: str, expected: str) -> None:
    assert queue_operation(method, f"http://127.0.0.1:10001{path}") == expected


def test_blob_requests_are_named_and_counted() -> None:
    assert blob_operation("PUT", "http://h/acct/c?restype=container") == "container_put"
    assert blob_operation("GET", "http://h/acct/c/q/1") == "download"
    stats = RequestStats()
    stats.add("queue.send")
    stats.add("queue.send")
    stats.add("blob.upload")
    assert stats.total("queue") == 2 and stats.snapshot()["blob.upload"] == 1


def test_celery_settings_report_masks_a_secret_connection_string() -> None:
    from celery import Celery

    app = Celery("report_check", broker="azurequeue://")
    secret = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=TOPSECRET;"
    app.conf.broker_transport_options = {"connection_string": Secret(secret)}
    report = app.conf.humanize(with_defaults=False, censored=True)
    assert "TOPSECRET" not in report
    assert "broker_transport_options" in report


def test_default_azure_credential_needs_the_identity_extra() -> None:
    from transports.azurequeue.auth import build_clients

    try:
        import azure.identity  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"flowcraft-celery\[identity\]"):
            build_clients(f"azurequeue://DefaultAzureCredential@{URL}", {})
    else:
        clients = build_clients(f"azurequeue://DefaultAzureCredential@{URL}", {})
        assert clients.queues.account_name == "acct"
