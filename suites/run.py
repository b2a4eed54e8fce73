"""Run kombu's and Celery's own integration suites against `azurequeue://` and `cosmos://`.

The suites are not part of this project: this script downloads the source distributions of the
kombu and Celery versions *installed* here (`pip download --no-binary`), unpacks them into a
temporary folder, adds our plug-in there and runs their tests from that folder, the way their CI
plugs a broker in:

* kombu: `t/integration/common.py`'s base classes, subclassed by `suites/kombu_azurequeue.py`
  (copied in as `t/integration/test_azurequeue.py`, like kombu's `test_sqs.py`);
* Celery: `t/integration/` with `TEST_BROKER=azurequeue://`, `TEST_BACKEND=cosmos://` and an
  `integration-tests-config.json` carrying the transport options.

Usage (the dev services up, `flowcraft-celery services up`):

    python suites/run.py kombu [--redis] [--keep] [-- <pytest args>]
    python suites/run.py celery [--no-redis | --baseline] [--keep] [--files test_tasks.py ...] [-- <pytest args>]

Prints one summary line per run (`passed/failed/skipped/...`) and exits with pytest's status.
Downloads are cached in ``$FLOWCRAFT_SUITES_CACHE`` (default ``~/.cache/flowcraft-celery/sdists``);
the unpacked tree is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_CACHE = Path.home() / ".cache" / "flowcraft-celery" / "sdists"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def sdist(name: str, cache: Path) -> Path:
    """The sdist of the installed version of `name`, downloaded into `cache` once."""
    wanted = version(name)
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{name}-{wanted}.tar.gz"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"{name}=={wanted}", "--dest", str(cache)],
            check=True,
        )
        found = sorted(cache.glob(f"{name}-{wanted}.tar.gz"))
    if not found:
        raise SystemExit(f"pip download gave no {name}-{wanted}.tar.gz in {cache}")
    return found[0]


def unpack(archive: Path, into: Path) -> Path:
    """Unpack a source archive; return its top folder."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / archive.name.removesuffix(".tar.gz")


def summary(junit: Path) -> dict[str, dict[str, int]]:
    """Counts per test module (and `all`) of a pytest JUnit XML report; failed lists errors too."""
    counts: dict[str, dict[str, int]] = {}
    if not junit.exists():
        return counts
    for case in ET.parse(junit).iter("testcase"):
        module = next((part for part in case.get("classname", "").split(".") if part.startswith("test_")), "other")
        tags = {child.tag for child in case}
        skipped = case.find("skipped")
        if "failure" in tags or "error" in tags:
            outcome = "failed"
        elif skipped is not None and (skipped.get("type") == "pytest.xfail"):
            outcome = "xfailed"
        elif skipped is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        for name in ("all", module):
            row = counts.setdefault(name, {"passed": 0, "failed": 0, "skipped": 0, "xfailed": 0})
            row[outcome] += 1
    return counts


def services_env() -> dict[str, str]:
    """The environment with the project importable first and the dev services' variables."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    missing = [v for v in ("AZURE_STORAGE_CONNECTION_STRING",) if not env.get(v)]
    if missing:
        raise SystemExit(f"set {', '.join(missing)} (eval \"$(flowcraft-celery services up --env)\")")
    return env


def run_pytest(folder: Path, args: list[str], env: dict[str, str], label: str) -> int:
    """Run pytest in `folder`; print `label` with the counts."""
    junit = folder / f"junit-{uuid.uuid4().hex[:6]}.xml"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}", *args]
    print(f"[{label}] {folder}$ {' '.join(command)}", flush=True)
    rc = subprocess.run(command, cwd=folder, env=env).returncode
    for module, counts in summary(junit).items():
        line = ", ".join(f"{n} {k}" for k, n in counts.items())
        print(f"SUITE {label} [{module}]: {line} (pytest exit {rc})", flush=True)
    return rc


def run_kombu(work: Path, cache: Path, redis: str | None, args: list[str]) -> int:
    """kombu's t/integration base classes with our plug-in module."""
    tree = unpack(sdist("kombu", cache), work)
    shutil.copy(HERE / "kombu_azurequeue.py", tree / "t" / "integration" / "test_azurequeue.py")
    env = services_env()
    env.pop("AZUREQUEUE_SUITE_REDIS_URL", None)
    if redis:
        env["AZUREQUEUE_SUITE_REDIS_URL"] = redis
    label = f"kombu {version('kombu')} azurequeue {'with redis_url' if redis else 'Azure only'}"
    return run_pytest(tree, ["t/integration/test_azurequeue.py", *args], env, label)


def run_celery(work: Path, cache: Path, redis: str | None, files: list[str], args: list[str],
               baseline: bool = False) -> int:
    """Celery's t/integration with TEST_BROKER=azurequeue://, TEST_BACKEND=cosmos:// (or, for
    the baseline, Redis for both, as Celery's CI runs it)."""
    tree = unpack(sdist("celery", cache), work)
    targets = [f"t/integration/{name}" for name in files]
    if baseline:
        env = services_env()
        url = redis or DEFAULT_REDIS
        env.update(TEST_BROKER=url, TEST_BACKEND=url)
        label = f"celery {version('celery')} Redis baseline (broker and backend {url})"
        return run_pytest(tree, ["-p", "celery.contrib.pytest", "--tb=native", *targets, *args], env, label)
    prefix = f"cs{uuid.uuid4().hex[:8]}-"
    options: dict[str, object] = {"queue_name_prefix": prefix}
    if redis:
        options["redis_url"] = redis
    config = {
        "broker_transport_options": options,
        "flowcraft_redis_url": redis or DEFAULT_REDIS,
        "flowcraft_key_prefix": f"flowcraft:{prefix}",
    }
    (tree / "integration-tests-config.json").write_text(json.dumps(config, indent=2))
    env = services_env()
    env.update(TEST_BROKER="azurequeue://", TEST_BACKEND="cosmos://")
    label = f"celery {version('celery')} azurequeue {'with redis_url' if redis else 'Azure only'} + cosmos"
    # --tb=native: pytest's own traceback formatting crashes (INTERNALERROR) on some timeouts
    plugins = ["-p", "celery.contrib.pytest", "-p", "suites.celery_plugin"]
    try:
        return run_pytest(tree, [*plugins, "--tb=native", *targets, *args], env, label)
    finally:
        remove_queues(env["AZURE_STORAGE_CONNECTION_STRING"], prefix)


def remove_queues(connection_string: str, prefix: str) -> None:
    """Delete the Azure queues whose names start with `prefix` (what a suite run made); say what failed."""
    from azure.storage.queue import QueueServiceClient

    try:
        service = QueueServiceClient.from_connection_string(connection_string)
        for queue in service.list_queues(name_starts_with=prefix):
            service.delete_queue(queue.name)
    except Exception as exc:
        print(f"could not remove the queues {prefix}*: {exc}".splitlines()[0], file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one suite."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=["kombu", "celery"])
    parser.add_argument("--redis", action="store_true", help="kombu: run with the redis_url transport option")
    parser.add_argument("--no-redis", action="store_true", help="celery: run without the redis_url option")
    parser.add_argument("--baseline", action="store_true",
                        help="celery: Redis as broker and backend (the baseline to compare with)")
    parser.add_argument("--files", nargs="*", default=["test_tasks.py", "test_canvas.py", "test_inspect.py"])
    parser.add_argument("--keep", action="store_true", help="keep the unpacked sdist (path printed)")
    options = parser.parse_args(argv)
    cache = Path(os.environ.get("FLOWCRAFT_SUITES_CACHE") or DEFAULT_CACHE)
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS
    work = Path(tempfile.mkdtemp(prefix=f"flowcraft-{options.suite}-suite-"))
    try:
        if options.suite == "kombu":
            return run_kombu(work, cache, redis_url if options.redis else None, extra)
        return run_celery(work, cache, None if options.no_redis else redis_url, options.files, extra,
                          baseline=options.baseline)
    finally:
        if options.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
