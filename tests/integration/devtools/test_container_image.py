"""The container image: its Dockerfile read by Docker's own parser, its build context, the package it
installs, and the entrypoint that starts a worker, beat, Flower, the metrics exporter or a command.

The image itself is built only where a Docker daemon answers (and can pull the Python base
image); elsewhere that one test is skipped and the rest check everything the build would use.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import dockerfile
import pytest

ROOT = Path(__file__).resolve().parents[3]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def _commands() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(ROOT / "Dockerfile")))


def _final_stage() -> list[dockerfile.Command]:
    commands = _commands()
    last_from = max(i for i, c in enumerate(commands) if c.cmd == "FROM")
    return commands[last_from:]


def _ignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` (relative, with /) out of the build context (last rule wins)."""
    ignored = False
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        keep = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/").removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or fnmatch.fnmatch(parts[-1], pattern):
            ignored = not keep
    return ignored


def test_the_image_is_a_slim_python_running_as_a_user_with_the_entrypoint() -> None:
    final = _final_stage()
    base = final[0].value[0]
    assert base.startswith("python:") and base.endswith("-slim"), base
    [user] = [c for c in final if c.cmd == "USER"]
    assert user.value[0].split(":")[0] not in ("root", "0"), user
    assert final.index(user) > max(i for i, c in enumerate(final) if c.cmd == "RUN")  # installs ran as root, not after
    [entry] = [c for c in final if c.cmd == "ENTRYPOINT"]
    assert entry.json and entry.value == ("flowcraft-entrypoint",)
    [install] = [c for c in final if c.cmd == "RUN" and "pip install" in c.value[0]]
    assert '"flowcraft-celery[identity,flower]"' in install.value[0] and "--no-index" in install.value[0]
    [copy] = [c for c in final if c.cmd == "COPY" and c.value[-1] == "/usr/local/bin/flowcraft-entrypoint"]
    assert copy.value[0] == "docker/entrypoint.sh" and "--chmod=0755" in copy.flags


def test_everything_the_build_copies_is_in_the_build_context() -> None:
    sources = [source for c in _commands() if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)
               for source in c.value[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source), f"{source} is copied but .dockerignore leaves it out"
    assert _ignored(".venv/bin/python") and _ignored("node_modules/x") and _ignored("tests/conftest.py")


def test_the_build_context_makes_a_wheel_with_the_app_and_its_config(tmp_path: Path) -> None:
    """What the build stage's `pip wheel .` does, from only the files the build context holds."""
    context = tmp_path / "context"
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and not relative.startswith(".git") and not _ignored(relative):
            (context / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context / relative)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "--wheel-dir", str(tmp_path / "wheels"), str(context)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "wheels").glob("flowcraft_celery-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"celeryconfig.py", "flowcraft_celery/distributed/app.py", "transports/azurequeue/transport.py",
            "flowcraft_celery/cli/main.py"} <= names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Provides-Extra: identity" in text and "Provides-Extra: flower" in text


@pytest.fixture
def shims(tmp_path: Path) -> dict[str, str]:
    """`celery` and `flowcraft-celery` stand-ins that print the arguments they were started with."""
    for name in ("celery", "flowcraft-celery"):
        shim = tmp_path / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*"\n')
        shim.chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize(("args", "runs"), [
    ((), "celery -A flowcraft_celery worker -l INFO"),
    (("worker", "-Q", "flowcraft,flowcraft-reconcile", "-c", "4"),
     "celery -A flowcraft_celery worker -l INFO -Q flowcraft,flowcraft-reconcile -c 4"),
    (("beat",), "celery -A flowcraft_celery beat -l INFO -s /tmp/celerybeat-schedule"),
    (("flower", "--basic_auth=ops:pw"), "celery -A flowcraft_celery flower --address=0.0.0.0 --port=5555 "
                                        "--basic_auth=ops:pw"),
    (("metrics",), "flowcraft-celery metrics --address 0.0.0.0 --port 9808"),
    (("celery", "-A", "flowcraft_celery", "inspect", "ping"), "celery -A flowcraft_celery inspect ping"),
    (("start", "order-flow", "--wait"), "flowcraft-celery start order-flow --wait"),
], ids=["default", "worker", "beat", "flower", "metrics", "celery", "cli"])
def test_the_entrypoint_starts_the_named_process(shims: dict[str, str], args: tuple[str, ...], runs: str) -> None:
    result = subprocess.run(["sh", str(ENTRYPOINT), *args], env=shims, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == runs


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0


@pytest.mark.skipif(not _docker_answers(), reason="no Docker daemon answers on this machine")
def test_the_image_builds_and_runs_the_cli_as_a_user() -> None:
    tag = f"flowcraft-celery-test:{uuid.uuid4().hex[:8]}"
    built = subprocess.run(["docker", "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=1200,
                           check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    try:
        ran = subprocess.run(["docker", "run", "--rm", tag, "--help"], capture_output=True, text=True, timeout=120,
                             check=False)
        assert ran.returncode == 0 and "Usage:" in ran.stdout, ran.stderr
        who = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"], capture_output=True,
                             text=True, timeout=120, check=False)
        assert who.stdout.strip() == "10001"
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120, check=False)


EXAMPLE = ROOT / "examples" / "azure-container-apps"


def test_the_container_apps_example_image_holds_code_a_worker_can_run(tmp_path: Path) -> None:
    commands = list(dockerfile.parse_file(str(EXAMPLE / "Dockerfile")))
    assert [c.value for c in commands if c.cmd == "ARG"] == [("BASE=flowcraft-celery:latest",)]
    copied = [c.value[0] for c in commands if c.cmd == "COPY"]
    assert all((ROOT / "examples" / source).is_file() for source in copied), copied  # examples/ is the context
    [env] = [dict(zip(c.value[::2], c.value[1::2], strict=True)) for c in commands if c.cmd == "ENV"]
    # what the image's worker reads at start, checked as a worker would (module importable, blueprints valid)
    app = tmp_path / "app"
    (app / "flows").mkdir(parents=True)
    for source in copied:
        target = app / ("flows" if source.endswith(".json") else "") / source
        shutil.copy(ROOT / "examples" / source, target)
    checked = subprocess.run(
        [sys.executable, "-m", "flowcraft_celery.cli", "validate", str(app / "flows" / "order-flow.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join((str(app), str(ROOT))),
             "FLOWCRAFT_NODE_MODULES": env["FLOWCRAFT_NODE_MODULES"],
             "FLOWCRAFT_BLUEPRINTS": env["FLOWCRAFT_BLUEPRINTS"].replace("/app", str(app))})
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_container_apps_example_sets_only_real_settings_and_scales_on_the_task_queue() -> None:
    from transports.azurequeue.naming import azure_queue_name

    bicep = (EXAMPLE / "main.bicep").read_text()
    sources = "\n".join(p.read_text() for p in [ROOT / "celeryconfig.py", *ROOT.glob("flowcraft_celery/**/*.py"),
                                                 *ROOT.glob("transports/**/*.py")])
    settings = set(re.findall(r"\{ name: '([A-Z_0-9]+)', value:", bicep))
    assert {"CELERY_BROKER_URL", "AZURE_COSMOS_CONNECTION_STRING", "REDIS_URL", "FLOWCRAFT_REDIS_CREDENTIAL",
            "FLOWCRAFT_QUEUE_PREFIX", "FLOWCRAFT_DEFAULT_QUEUE"} <= settings
    read_by_azure_identity = {"AZURE_CLIENT_ID"}
    assert all(f'"{name}"' in sources or name.startswith("FLOWER_") for name in settings - read_by_azure_identity), \
        [name for name in settings if f'"{name}"' not in sources]
    # KEDA reads the Azure name of the task queue: prefix + Celery queue, as the transport names it
    assert "var taskQueue = '${queuePrefix}${defaultQueue}'" in bicep
    assert azure_queue_name("flowcraft", "prd-") == "prd-flowcraft"
    assert re.search(r"type: 'azure-queue'\s+metadata: \{[^}]*queueName: taskQueue[^}]*\}\s+identity: identity.id",
                     bicep)
    beat = bicep[bicep.index("resource beat "):bicep.index("resource flower ")]
    assert "scale: { minReplicas: 1, maxReplicas: 1 }" in beat
    assert "unauthenticatedClientAction: 'RedirectToLoginPage'" in bicep and "parent: flower" in bicep
