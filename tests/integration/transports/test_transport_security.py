"""Celery's message signing (`security_key`, `security_certificate`, `security_cert_store`,
`app.setup_security()`) end to end over `azurequeue://`: signed tasks run, unsigned ones are refused."""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

import redis
from celery import Celery
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.integration.transports.transport_support import processes, wait_for

APP = "tests.integration.transports.signed_app"


def write_key_and_certificate(folder: Path) -> None:
    """A self-signed certificate and its key, as `worker.pem` and `worker.key` in `folder`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowcraft signed tasks test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (folder / "worker.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    (folder / "worker.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_signed_tasks_run_and_unsigned_ones_are_refused(
    tmp_path: Path, rdb: redis.Redis, unique_prefix: str, monkeypatch: object
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    write_key_and_certificate(certs)
    os.environ["SIGNED_TEST_DIR"] = str(certs)
    os.environ["TRANSPORT_TEST_PREFIX"] = unique_prefix
    try:
        sys.modules.pop(APP, None)
        from tests.integration.transports.signed_app import app  # the client: same settings

        key = f"{unique_prefix}:signed"
        with processes(tmp_path, unique_prefix) as started:
            started.env.update(SIGNED_TEST_DIR=str(certs))
            worker = started.start("worker", [sys.executable, "-m", "celery", "-A", APP, "worker", "-l", "INFO",
                                              "-c", "1", "-n", f"signed-{unique_prefix}@%h"])
            wait_for(lambda: "ready." in worker.text(), 60)
            app.send_task("signed_app.record", args=[key, "signed"])
            wait_for(lambda: rdb.lrange(key, 0, -1) == ["signed"], 30)
            # the same task sent unsigned (json) by an app without the key is refused
            plain = Celery("plain", broker="azurequeue://")
            plain.conf.update(broker_transport_options=app.conf.broker_transport_options)
            plain.send_task("signed_app.record", args=[key, "unsigned"])
            wait_for(lambda: "untrusted content" in worker.text(), 30)
            assert rdb.lrange(key, 0, -1) == ["signed"]
            plain.close()
        app.close()
    finally:
        os.environ.pop("SIGNED_TEST_DIR", None)
        os.environ.pop("TRANSPORT_TEST_PREFIX", None)
        sys.modules.pop(APP, None)
