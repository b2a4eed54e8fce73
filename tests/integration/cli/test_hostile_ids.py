"""A node message whose ids are hostile (CR/LF, ESC, NUL, 5,000 characters) is dead-lettered and
leaves neither the worker's log nor `dlq show` with a raw control character or an endless line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from flowcraft_celery.devtools.workers import WorkerGroup
from tests.integration import names
from tests.integration.polling import wait_for

ROOT = Path(__file__).resolve().parents[3]
NODES = '''
from flowcraft_celery import node


@node("echo")
def echo(ctx):
    return ctx.input
'''
HOSTILE_RUN = "run\r\nERROR forged line\x1b[2J\x00" + "x" * 5000
HOSTILE_NODE = "node\n\x1b]0;title\x07\x00"
#: Bytes no log or terminal output may hold: C0 controls but LF and TAB, DEL, and C1 in UTF-8 (0xC2 0x80-0x9F).
RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
#: Longest line allowed: far below the 5,000 characters of the id (the dead-letter line names it 3 times).
LINE_BOUND = 2000


def assert_clean(output: bytes, what: str) -> None:
    assert not RAW_CONTROL.search(output), (what, RAW_CONTROL.search(output))
    longest = max(len(line) for line in output.split(b"\n"))
    assert longest <= LINE_BOUND, (what, longest)
    assert not any(line.startswith(b"ERROR forged") for line in output.split(b"\n")), what


def test_hostile_ids_are_dead_lettered_and_printed_escaped(services_env: dict[str, str], tmp_path: Path) -> None:
    from tests.integration.stores import cosmos_support

    (tmp_path / "hostilenodes.py").write_text(NODES, encoding="utf-8")
    queue = names.unique_name("hostile")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWCRAFT_", "CELERY_"))}
    with cosmos_support.temp_database("hostile") as database:
        env = {**base, **services_env, "FLOWCRAFT_DEFAULT_QUEUE": queue, "FLOWCRAFT_KEY_PREFIX": f"{queue}:",
               "FLOWCRAFT_COSMOS_DATABASE": database, "FLOWCRAFT_TASK_EVENTS": "false",
               "FLOWCRAFT_NODE_MODULES": "hostilenodes", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}

        def python(*args: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run([sys.executable, *args], env=env, cwd=tmp_path, capture_output=True,
                                  timeout=120, check=False)

        with WorkerGroup(env, tmp_path / "logs", cwd=tmp_path) as group:
            group.worker(concurrency=1)
            group.wait_ready(90)
            send = ("import json, sys; from flowcraft_celery.distributed.app import app; "
                    "app.send_task('flowcraft.node.echo', kwargs={'msg': json.loads(sys.argv[1])})")
            msg = {"run": HOSTILE_RUN, "bp": "bp\x1b[31m", "node": HOSTILE_NODE}
            sent = python("-c", send, json.dumps(msg))
            assert sent.returncode == 0, sent.stderr

            def shown() -> bytes | None:
                done = python("-m", "flowcraft_celery.cli", "dlq", "show", queue)
                assert done.returncode == 0, done.stderr
                return done.stdout if b"dead-lettered" in done.stdout else None

            dlq_show = wait_for(shown, 90, "the hostile message in the dead-letter queue", 1)
            def warned() -> bytes | None:
                text = group.logs[0].read_bytes()
                return text if b"moved to" in text else None

            log = wait_for(warned, 30, "the dead-letter warning in the worker log")
        assert_clean(log, "worker log")
        assert_clean(dlq_show, "dlq show")
        warning = [line for line in log.split(b"\n") if b"moved to" in line]
        assert len(warning) == 1 and b"run\\r\\nERROR forged line\\x1b[2J\\x00xxx" in warning[0], warning
        assert b"...(5" in warning[0]  # the id is cut, saying how long it was
        assert b"run\\r\\nERROR forged line\\x1b[2J\\x00" in dlq_show
