"""Dev services: make Azurite, the Cosmos DB emulator and Redis answer on loopback.

Whatever already answers on a port is reused; a free port gets the service started in the
background (logs and PID files in `.services/` at the repo root; Redis keeps its data there in
an append-only file, `.services/redis-<port>-aof/`, so a restart loses nothing); `down` stops only what
these commands started, by the PIDs in those files. Installs what is missing: `npm ci` for
the emulators, `apt-get install redis-server` when no `redis-server` is on PATH.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import click

from flowcraft_celery.devtools import background
from flowcraft_celery.devtools.named_endpoints import named_endpoints
from flowcraft_celery.errors import FlowcraftError

HOST = "127.0.0.1"
#: Host names of this machine: endpoints there are probed as dev services.
LOOPBACK = frozenset({HOST, "localhost", "::1"})
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
COSMOS_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU9DDJf5/2oMqLl6JVXUEHnCYqC7gsXzlzUm7xzy2Pp1FHpWw=="
DEFAULT_TIMEOUT = 60.0
PROBE_TIMEOUT = 2.0
#: Extra probes of a port whose answer did not look like the expected service before giving up.
FOREIGN_RECHECKS = 5

#: Environment variables that override each port, with the defaults.
PORT_VARS: dict[str, tuple[str, int]] = {
    "blob": ("FLOWCRAFT_AZURITE_BLOB_PORT", 10000),
    "queue": ("FLOWCRAFT_AZURITE_QUEUE_PORT", 10001),
    "table": ("FLOWCRAFT_AZURITE_TABLE_PORT", 10002),
    "cosmos": ("FLOWCRAFT_COSMOS_PORT", 8081),
    "redis": ("FLOWCRAFT_REDIS_PORT", 6379),
}


class ServiceError(FlowcraftError, RuntimeError):
    """A dev service could not be made to answer; the message names it and its log."""


@dataclass(frozen=True)
class Ports:
    """The loopback ports of the five endpoints."""

    blob: int = 10000
    queue: int = 10001
    table: int = 10002
    cosmos: int = 8081
    redis: int = 6379

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ports:
        """Read the port overrides (PORT_VARS) from the environment, validating each."""
        environ = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for name, (var, default) in PORT_VARS.items():
            raw = environ.get(var, "").strip()
            if not raw:
                values[name] = default
                continue
            if not raw.isdigit() or not 1 <= int(raw) <= 65535:
                raise ServiceError(f"{var}={raw!r} is not a TCP port (1-65535)")
            values[name] = int(raw)
        if len(set(values.values())) != len(values):
            raise ServiceError(f"dev service ports must differ, got {values}")
        return cls(**values)


def env_vars(ports: Ports) -> dict[str, str]:
    """The environment variables the app reads to reach the services on `ports`."""
    base = f"http://{HOST}:{{}}/{AZURITE_ACCOUNT}"
    storage = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={base.format(ports.blob)};QueueEndpoint={base.format(ports.queue)};"
        f"TableEndpoint={base.format(ports.table)};"
    )
    return {
        "AZURE_STORAGE_CONNECTION_STRING": storage,
        "AZURE_COSMOS_CONNECTION_STRING": (f"AccountEndpoint=https://{HOST}:{ports.cosmos}/;AccountKey={COSMOS_KEY};"),
        "FLOWCRAFT_COSMOS_VERIFY_TLS": "false",
        "REDIS_URL": f"redis://{HOST}:{ports.redis}/0",
    }


def render_exports(env: Mapping[str, str]) -> str:
    """Shell `export NAME='value'` lines, safe for `eval`."""
    quoted = {name: "'" + value.replace("'", "'\"'\"'") + "'" for name, value in env.items()}
    return "".join(f"export {name}={value}\n" for name, value in quoted.items())


# --- probes ------------------------------------------------------------------------------


class State(enum.Enum):
    """What listens on a port."""

    ANSWERS = "answers"
    FREE = "free"
    FOREIGN = "in use by something else"
    UNREACHABLE = "unreachable"


def _port_open(port: int, host: str = HOST) -> bool:
    """True when something accepts TCP connections on the port (loopback unless `host` says)."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def _http_headers(host: str, port: int, *, tls: bool) -> http.client.HTTPMessage | None:
    """Headers of a GET on the port (TLS unverified), or None when no HTTP answer came."""
    conn: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=PROBE_TIMEOUT, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", f"/{AZURITE_ACCOUNT}?comp=list" if not tls else "/")
        response = conn.getresponse()
        response.read()
        return response.headers
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _azurite_probe(kind: str) -> Callable[[str, int], bool]:
    """A probe that checks an Azurite endpoint of `kind` (Blob, Queue, Table) answers."""

    def probe(host: str, port: int) -> bool:
        headers = _http_headers(host, port, tls=False)
        return headers is not None and headers.get("Server", "").startswith(f"Azurite-{kind}")

    return probe


def _cosmos_probe(host: str, port: int) -> bool:
    """True when a Cosmos DB emulator answers HTTPS on the port."""
    headers = _http_headers(host, port, tls=True)
    return headers is not None and "x-ms-activity-id" in headers


def _redis_probe(host: str, port: int) -> bool:
    """True when Redis answers PING on the port."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass(frozen=True)
class Endpoint:
    """One service endpoint: its name, port, URL and the request that proves it answers (on
    `host`, loopback unless a setting names another; `setting` names that setting)."""

    name: str
    port: int
    url: str
    probe: Callable[[str, int], bool] = field(compare=False)
    host: str = HOST
    setting: str = field(default="", compare=False)

    def state(self) -> State:
        """Probe the port: the service answers, the port is free, or something else has it."""
        if self.probe(self.host, self.port):
            return State.ANSWERS
        if self.host not in LOOPBACK:
            return State.UNREACHABLE
        return State.FOREIGN if _port_open(self.port, self.host) else State.FREE


def endpoints(ports: Ports) -> list[Endpoint]:
    """The five endpoints on `ports`, in start order."""
    return [
        Endpoint("azurite-blob", ports.blob, f"http://{HOST}:{ports.blob}", _azurite_probe("Blob")),
        Endpoint("azurite-queue", ports.queue, f"http://{HOST}:{ports.queue}", _azurite_probe("Queue")),
        Endpoint("azurite-table", ports.table, f"http://{HOST}:{ports.table}", _azurite_probe("Table")),
        Endpoint("cosmos", ports.cosmos, f"https://{HOST}:{ports.cosmos}", _cosmos_probe),
        Endpoint("redis", ports.redis, f"redis://{HOST}:{ports.redis}", _redis_probe),
    ]


# --- launches ------------------------------------------------------------------------------

#: cosmosdb-server through its package's API with HTTP keep-alive on (its CLI closes every
#: connection, so each request would pay a TLS handshake that Cosmos DB never charges).
COSMOS_LAUNCHER = Path(__file__).with_name("cosmosdb_server.js")
AZURITE_FLAGS = ("--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck", "--silent")
#: Redis keeps its data across restarts: an append-only file (fsync every second) under
#: `.services/` (the process's working directory), no RDB snapshots; never evicts a key.
REDIS_FLAGS = ("--bind", HOST, "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
               "--maxmemory-policy", "noeviction", "--daemonize", "no")


@dataclass(frozen=True)
class Launch:
    """A background process that serves some endpoints; `key` names its PID and log files."""

    key: str
    endpoints: tuple[Endpoint, ...]
    argv: tuple[str, ...]

    @property
    def program(self) -> str:
        """The executable's base name, used to recognise the process behind a PID."""
        return Path(self.argv[0]).name


def _azurite(bin_dir: Path, program: str, parts: list[Endpoint]) -> Launch:
    """Azurite (`program`: the whole or one service's binary) serving `parts` on loopback."""
    key = "-".join([program, *(str(e.port) for e in parts)])
    flags: list[str] = []
    for e in parts:
        kind = e.name.removeprefix("azurite-")
        flags += [f"--{kind}Host", HOST, f"--{kind}Port", str(e.port)]
    return Launch(key, tuple(parts), (str(bin_dir / program), *AZURITE_FLAGS, *flags))


def launches(ports: Ports, root: Path, redis_server: str = "redis-server") -> list[Launch]:
    """Every process that can serve endpoints on `ports`, whole Azurite before its parts."""
    blob, queue, table, cosmos, redis = endpoints(ports)
    bin_dir = root / "node_modules" / ".bin"
    cosmos_argv = (str(COSMOS_LAUNCHER), str(root / "node_modules" / "@vercel" / "cosmosdb-server"),
                   str(cosmos.port), HOST)
    redis_argv = (redis_server, "--port", str(redis.port), *REDIS_FLAGS, "--appenddirname", f"redis-{redis.port}-aof")
    return [
        _azurite(bin_dir, "azurite", [blob, queue, table]),
        *(_azurite(bin_dir, part.name, [part]) for part in (blob, queue, table)),
        Launch(f"cosmosdb-server-{cosmos.port}", (cosmos,), cosmos_argv),
        Launch(f"redis-{redis.port}", (redis,), redis_argv),
    ]


def plan(ports: Ports, states: Mapping[str, State], root: Path, redis_server: str) -> list[Launch]:
    """The processes to start so every free endpoint gets served (pure: no probing)."""
    uncovered = {name for name, state in states.items() if state is State.FREE}
    chosen: list[Launch] = []
    for launch in launches(ports, root, redis_server):
        names = {e.name for e in launch.endpoints}
        if names <= uncovered:
            chosen.append(launch)
            uncovered -= names
    return chosen


# --- installing and running ------------------------------------------------------------------


def repo_root() -> Path:
    """The checkout holding package-lock.json (the emulators): the package's parent, else cwd."""
    for candidate in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (candidate / "package-lock.json").is_file():
            return candidate
    raise ServiceError("package-lock.json not found: run from the flowcraft-celery checkout")


def services_dir(root: Path) -> Path:
    """`.services/` at the repo root (logs, PID files), created on demand."""
    path = root / ".services"
    path.mkdir(exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise up/down across processes so two callers never start the same service."""
    with (services_dir(root) / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_logged(argv: list[str], log: Path, what: str, cwd: Path) -> None:
    """Run an install step to completion with its output in `log`; fail naming it and the log."""
    with log.open("ab") as out:
        code = subprocess.run(
            argv,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        ).returncode
    if code != 0:
        raise ServiceError(f"{what} failed (exit {code}); see {log}\n{background.log_tail(log)}")


def _ensure_node_tools(root: Path, chosen: list[Launch]) -> None:
    """Run `npm ci` when an emulator the chosen launches need is missing from node_modules."""
    if all(Path(la.argv[0]).exists() for la in chosen if "node_modules" in la.argv[0]):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise ServiceError("the emulators are not in node_modules and npm is not on PATH")
    log = services_dir(root) / "npm-ci.log"
    log.unlink(missing_ok=True)
    _run_logged([npm, "ci", "--no-audit", "--no-fund"], log, "npm ci", root)


def _redis_server(root: Path) -> str:
    """The `redis-server` on PATH, installed with apt-get first when there is none."""
    found = shutil.which("redis-server")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise ServiceError("redis-server is not on PATH and apt-get is unavailable: install Redis")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise ServiceError("redis-server is not on PATH; installing it needs root or sudo")
        prefix = [sudo, "-n"]
    log = services_dir(root) / "apt-redis.log"
    log.unlink(missing_ok=True)
    _run_logged([*prefix, apt, "update"], log, "apt-get update", root)
    _run_logged([*prefix, apt, "install", "-y", "redis-server"], log, "apt-get install", root)
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if not found:
        raise ServiceError(f"apt-get installed no redis-server on PATH; see {log}")
    return found


def _wait_ready(folder: Path, started: Mapping[Launch, int], timeout: float) -> None:
    """Wait until every started launch answers; fail naming the service and its log."""
    deadline = time.monotonic() + timeout
    pending = dict(started)
    while True:
        for launch, pid in list(pending.items()):
            log = background.log_path(folder, launch.key)
            if all(e.probe(e.host, e.port) for e in launch.endpoints):
                del pending[launch]
            elif not background.alive(pid):
                code = background.exit_code(pid)
                tail = background.log_tail(log)
                raise ServiceError(f"{launch.key} exited (code {code}) before answering; see {log}\n{tail}")
        if not pending:
            return
        if time.monotonic() > deadline:
            launch = next(iter(pending))
            urls = ", ".join(e.url for e in launch.endpoints)
            log = background.log_path(folder, launch.key)
            tail = background.log_tail(log)
            raise ServiceError(f"{launch.key} did not answer on {urls} within {timeout:g}s; see {log}\n{tail}")
        time.sleep(0.2)


# --- the three operations ------------------------------------------------------------------

#: Launches started by this Python process (what `down(only_started_here=True)` stops).
_started_here: set[str] = set()


@dataclass(frozen=True)
class Report:
    """One line of `up`/`status`: an endpoint, its state and who runs it."""

    endpoint: Endpoint
    state: State
    note: str

    def line(self) -> str:
        """Human-readable: name, URL, state and note."""
        return f"{self.endpoint.name:<14} {self.endpoint.url:<24} {self.state.value:<8} {self.note}"


def _own_process(folder: Path, ports: Ports, root: Path, endpoint: Endpoint) -> tuple[Launch, int] | None:
    """The live process `services up` started that serves `endpoint` (its launch and PID), if any."""
    for launch in launches(ports, root):
        if endpoint in launch.endpoints:
            pid = background.running_pid(folder, launch.key, launch.program)
            if pid is not None:
                return launch, pid
    return None


def _owner_note(folder: Path, ports: Ports, root: Path, endpoint: Endpoint) -> str:
    """Who runs an answering endpoint: a process from `services up` (PID, log) or someone else."""
    own = _own_process(folder, ports, root, endpoint)
    if own is None:
        return "not started by flowcraft-celery"
    launch, pid = own
    return f"started by flowcraft-celery (pid {pid}, log {background.log_path(folder, launch.key)})"


def _wait_for_own_busy(folder: Path, ports: Ports, root: Path, by_name: Mapping[str, Endpoint],
                       states: Mapping[str, State], timeout: float) -> list[str]:
    """The endpoints that did not answer but whose port a process `services up` started holds:
    a busy emulator, not a stranger. Wait up to `timeout` for them to answer (their names), else
    fail naming the process and its log."""
    own: dict[str, tuple[Endpoint, Launch, int]] = {}
    for name, endpoint in by_name.items():
        found = _own_process(folder, ports, root, endpoint) if states.get(name) is State.FOREIGN else None
        if found is not None:
            own[name] = (endpoint, *found)
    deadline = time.monotonic() + timeout
    waiting = dict(own)
    while waiting:
        waiting = {name: entry for name, entry in waiting.items() if not entry[0].probe(entry[0].host, entry[0].port)}
        if waiting and time.monotonic() > deadline:
            endpoint, launch, pid = next(iter(waiting.values()))
            raise ServiceError(f"{endpoint.name} on {endpoint.url} (started by flowcraft-celery, pid {pid}) did not "
                               f"answer within {timeout:g} s; its log: {background.log_path(folder, launch.key)}")
        if waiting:
            time.sleep(PROBE_TIMEOUT)
    return list(own)


def bring_up(ports: Ports | None = None, timeout: float = DEFAULT_TIMEOUT) -> list[Report]:
    """Make every endpoint answer (reuse what answers, start the rest) and report each."""
    ports = Ports.from_env() if ports is None else ports
    root = repo_root()
    folder = services_dir(root)
    with _locked(root):
        by_name = {e.name: e for e in endpoints(ports)}
        states = {name: e.state() for name, e in by_name.items()}
        for _ in range(FOREIGN_RECHECKS):  # a busy emulator can miss one probe: ask again
            if State.FOREIGN not in states.values():
                break
            time.sleep(PROBE_TIMEOUT)
            states = {name: e.state() if states[name] is State.FOREIGN else states[name]
                      for name, e in by_name.items()}
        for name in _wait_for_own_busy(folder, ports, root, by_name, states, timeout):
            states[name] = State.ANSWERS
        taken = [e for e in by_name.values() if states[e.name] is State.FOREIGN]
        if taken:
            names = ", ".join(f"{e.name} on {e.url}" for e in taken)
            raise ServiceError(f"port in use by something that is not the expected service: {names}")
        redis_server = "redis-server"
        if states["redis"] is State.FREE:
            redis_server = _redis_server(root)
            states["redis"] = by_name["redis"].state()
        chosen = plan(ports, states, root, redis_server)
        _ensure_node_tools(root, chosen)
        started: dict[Launch, int] = {}
        try:
            for launch in chosen:
                started[launch] = background.start(folder, launch.key, launch.argv)
                _started_here.add(launch.key)
            _wait_ready(folder, started, timeout)
        except BaseException:
            for launch in started:
                background.stop(folder, launch.key, launch.program)
                _started_here.discard(launch.key)
            raise
    reports = []
    for endpoint in by_name.values():
        fresh = [(la, pid) for la, pid in started.items() if endpoint in la.endpoints]
        if fresh:
            launch, pid = fresh[0]
            note = f"started (pid {pid}, log {background.log_path(folder, launch.key)})"
        else:
            note = "reused, " + _owner_note(folder, ports, root, endpoint)
        reports.append(Report(endpoint, State.ANSWERS, note))
    return reports


def up(ports: Ports | None = None, timeout: float = DEFAULT_TIMEOUT) -> dict[str, str]:
    """Make the services answer and return the environment variables that point at them."""
    ports = Ports.from_env() if ports is None else ports
    bring_up(ports, timeout)
    return env_vars(ports)


def configured(ports: Ports, environ: Mapping[str, str]) -> list[Endpoint]:
    """The endpoints on `ports`, each replaced by the one the app's settings in `environ` name
    (AZURE_STORAGE_CONNECTION_STRING, CELERY_BROKER_URL, AZURE_COSMOS_CONNECTION_STRING, REDIS_URL).
    Off loopback, an endpoint is only checked to accept connections (it is no dev service)."""
    named = named_endpoints(environ)
    chosen = []
    for endpoint in endpoints(ports):
        found = named.get(endpoint.name)
        if found is None:
            chosen.append(endpoint)
            continue
        probe = endpoint.probe if found.host in LOOPBACK else _accepts_connections
        chosen.append(Endpoint(endpoint.name, found.port, found.url, probe, found.host, found.setting))
    return chosen


def _accepts_connections(host: str, port: int) -> bool:
    return _port_open(port, host)


def status(ports: Ports | None = None, environ: Mapping[str, str] | None = None) -> list[Report]:
    """Probe every endpoint (those the settings in `environ` name, else the dev ports) and say who
    runs it (changes nothing but stale PID files)."""
    ports = Ports.from_env() if ports is None else ports
    root = repo_root()
    folder = services_dir(root)
    reports = []
    for endpoint in configured(ports, {} if environ is None else environ):
        state = endpoint.state()
        note = _owner_note(folder, ports, root, endpoint) if state is State.ANSWERS else ""
        if endpoint.setting:
            note = f"(from {endpoint.setting}) {note}".rstrip()
        reports.append(Report(endpoint, state, note))
    return reports


def down(ports: Ports | None = None, *, only_started_here: bool = False) -> list[str]:
    """Stop what `up` started on `ports` (all of it, or only this process's); return the keys."""
    ports = Ports.from_env() if ports is None else ports
    root = repo_root()
    folder = services_dir(root)
    stopped = []
    with _locked(root):
        for launch in launches(ports, root):
            if only_started_here and launch.key not in _started_here:
                continue
            if background.stop(folder, launch.key, launch.program) is not None:
                stopped.append(launch.key)
            _started_here.discard(launch.key)
    return stopped


# --- command line ------------------------------------------------------------------------------

_PORTS_HELP = "\b\n" + "\n".join(f"{var} (default {default})" for var, default in PORT_VARS.values())


@click.group(
    "services",
    help=(
        "Dev services on loopback: Azurite (blob, queue, table), the Cosmos DB emulator, Redis. "
        "`up` reuses what already answers and starts the rest (logs and PID files in .services/); "
        "`down` stops only what `up` started.\n\nPorts are overridable by environment:\n\n" + _PORTS_HELP
    ),
)
def services_command() -> None:
    """Group for `up`, `status` and `down`."""


@services_command.command("up")
@click.option(
    "--env",
    "env_only",
    is_flag=True,
    help="Print only `export NAME='value'` lines (for eval); the report goes to stderr.",
)
@click.option(
    "--timeout",
    type=float,
    default=DEFAULT_TIMEOUT,
    show_default=True,
    envvar="FLOWCRAFT_SERVICES_TIMEOUT",
    help="Seconds to wait for a started service to answer (env FLOWCRAFT_SERVICES_TIMEOUT).",
)
def up_command(env_only: bool, timeout: float) -> None:
    """Make the services answer (reuse or start) and print where they are and the env vars."""
    try:
        ports = Ports.from_env()
        reports = bring_up(ports, timeout)
    except ServiceError as error:
        raise click.ClickException(str(error)) from error
    for report in reports:
        click.echo(report.line(), err=env_only)
    if not env_only:
        click.echo('\nEnvironment (eval "$(flowcraft-celery services up --env)"):')
    click.echo(render_exports(env_vars(ports)), nl=False)


@services_command.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the endpoints as JSON.")
def status_command(as_json: bool) -> None:
    """Show each endpoint's state and who runs it; exit 1 when one does not answer.

    The endpoints are those AZURE_STORAGE_CONNECTION_STRING, CELERY_BROKER_URL,
    AZURE_COSMOS_CONNECTION_STRING and REDIS_URL name, else the dev ports.
    """
    try:
        reports = status(environ=os.environ)
    except ServiceError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps([{"service": r.endpoint.name, "url": r.endpoint.url, "state": r.state.value,
                                "setting": r.endpoint.setting or None, "note": r.note} for r in reports], indent=2))
    for report in reports if not as_json else ():
        click.echo(report.line())
    if any(r.state is not State.ANSWERS for r in reports):
        raise SystemExit(1)


@services_command.command("down")
def down_command() -> None:
    """Stop the services `up` started (by the PIDs in .services/); leave others running."""
    try:
        stopped = down()
    except ServiceError as error:
        raise click.ClickException(str(error)) from error
    for key in stopped:
        click.echo(f"stopped {key}")
    if not stopped:
        click.echo("nothing to stop: no service started by flowcraft-celery is running")
