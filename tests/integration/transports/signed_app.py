"""A Celery app whose task messages are signed (Celery's `auth` serializer) over `azurequeue://`.

The example docs/azure.md shows ("Signed task messages"), run by test_transport_security.py.
`SIGNED_TEST_DIR` holds `worker.key` and `worker.pem`; `TRANSPORT_TEST_PREFIX` isolates the test.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

import transports  # noqa: F401  (registers azurequeue://)

certs = os.environ["SIGNED_TEST_DIR"]

app = Celery("signed_app", broker="azurequeue://")
app.conf.update(
    broker_transport_options={
        "queue_name_prefix": os.environ["TRANSPORT_TEST_PREFIX"],
        "redis_url": os.environ["REDIS_URL"],
    },
    # Celery's message signing: tasks are signed with the key, checked against the certificates
    security_key=f"{certs}/worker.key",
    security_certificate=f"{certs}/worker.pem",
    security_cert_store=f"{certs}/*.pem",
    security_digest="sha256",
    task_serializer="auth",
    event_serializer="auth",
    accept_content=["auth"],
    result_accept_content=["json"],
    worker_hijack_root_logger=False,
)
app.setup_security()


@app.task(name="signed_app.record")
def record(key: str, token: str) -> None:
    """Append `token` to the Redis list `key`."""
    redis.Redis.from_url(os.environ["REDIS_URL"]).rpush(key, token)
