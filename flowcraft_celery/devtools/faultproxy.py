"""A fault proxy: Azure's "no" in front of Azurite and the Cosmos DB emulator (a dev and test tool).

The emulators never throttle; real Azure does, routinely. This HTTP(S) proxy (aiohttp) forwards
each request to its emulator and, at the rates a `FaultPlan` says, per service and operation kind,
answers instead as Azure does when it says no:

* Queue (and Blob) Storage: `503 ServerBusy` and `500 OperationTimedOut`, with Azure's error XML and
  `x-ms-error-code`;
* Cosmos DB: `429` with `x-ms-retry-after-ms` and sub-status 3200, `408`, `503`, with Cosmos's JSON;
* any service: a reset connection (`reset`: TCP RST, no answer);
* added latency: an exponential distribution of median `latency_ms`, plus a tail: a share `tail` of
  requests waits `tail_seconds` (e.g. +5 ms median with 1 % taking 2 s);
* rate limits, Azure's scaled down: messages per second per queue (`queue_rates`, name or `*`;
  over it: 503 ServerBusy "over the account limit"), request units per second per Cosmos partition
  (`partition_ru`: a read costs 1 RU, a query 3, a write 6; over it: 429 with the wait until the
  partition has budget again as `x-ms-retry-after-ms`).

Rules read `service[/kind,kind]=answer@rate`: `queue=503@0.1` (10 % of every queue request),
`queue/send=500@0.05`, `cosmos=429@0.1`, `cosmos/docs:patch,docs:upsert=408@0.01`, `*=reset@0.001`.
Kinds are those `transports.azurequeue.STATS` and `stores.cosmos_client` count (`send`, `receive`,
`delete`, `update`, ...; `docs:read`, `docs:query`, `docs:patch`, ...).

Each listener also answers `GET /__faultproxy__/stats` (requests, injected answers, delays, by
service and kind; JSON) and `PUT /__faultproxy__/plan` (a new plan, JSON, at once): a benchmark
changes the throttling rate without restarting anything.

The Cosmos listener speaks TLS (a throw-away certificate) and rewrites the emulator's account
document so the SDK keeps talking to the proxy. Redis is not proxied: Redis faults use a real Redis
(paused, killed, restarted empty; see tests/integration/faults).

    flowcraft-celery fault-proxy --rule queue=503@0.1 --rule cosmos=429@0.1 --tail 0.01 --tail-seconds 2
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import socket
import ssl
import struct
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.stores.cosmos_client import operation_of
from transports.azurequeue import blob_operation, queue_operation

logger = logging.getLogger("flowcraft.faultproxy")

CONTROL = "/__faultproxy__/"
SERVICES = ("queue", "blob", "cosmos")
ANSWERS = {"queue": {"503", "500", "reset"}, "blob": {"503", "500", "reset"},
           "cosmos": {"429", "408", "503", "reset"}}
#: Request-unit charge of a Cosmos operation in the rate limiter (writes cost more than reads).
RU_COST = {"read": 1.0, "readfeed": 2.0, "query": 3.0}
WRITE_RU = 6.0
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection",
                          "proxy-authenticate", "proxy-authorization", "content-length", "trailer"})


class PlanError(FlowcraftError, ValueError):
    """A fault plan or rule that cannot be read; the message names the part."""


@dataclass(frozen=True)
class Rule:
    """Answer `answer` to a share `rate` of `service`'s requests of the given kinds (all if empty)."""

    service: str
    answer: str
    rate: float
    kinds: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Rule:
        """Read `service[/kind,kind]=answer@rate`."""
        target, sep, what = text.partition("=")
        answer, at, rate_text = what.partition("@")
        if not sep or not at:
            raise PlanError(f"fault rule {text!r} is not service[/kind,...]=answer@rate")
        service, _, kinds = target.strip().partition("/")
        if service != "*" and service not in SERVICES:
            raise PlanError(f"fault rule {text!r}: service must be one of {', '.join(SERVICES)} or *")
        allowed = set.union(*ANSWERS.values()) if service == "*" else ANSWERS[service]
        if answer.strip() not in allowed:
            raise PlanError(f"fault rule {text!r}: answer must be one of {', '.join(sorted(allowed))}")
        try:
            rate = float(rate_text)
        except ValueError:
            raise PlanError(f"fault rule {text!r}: rate {rate_text!r} is not a number") from None
        if not 0 <= rate <= 1:
            raise PlanError(f"fault rule {text!r}: rate must be between 0 and 1")
        return cls(service, answer.strip(), rate, frozenset(k.strip() for k in kinds.split(",") if k.strip()))

    def applies(self, service: str, kind: str) -> bool:
        """Whether the rule covers a request of `service` and `kind`."""
        if self.service not in ("*", service) or self.answer not in ANSWERS[service]:
            return False
        return not self.kinds or kind in self.kinds

    def __str__(self) -> str:
        kinds = "/" + ",".join(sorted(self.kinds)) if self.kinds else ""
        return f"{self.service}{kinds}={self.answer}@{self.rate:g}"


@dataclass(frozen=True)
class FaultPlan:
    """What the proxy does to requests (see the module doc); JSON with `to_json`/`from_json`."""

    rules: tuple[Rule, ...] = ()
    latency_ms: float = 0.0
    tail: float = 0.0
    tail_seconds: float = 0.0
    retry_after_ms: int = 100
    queue_rates: Mapping[str, float] = field(default_factory=dict)
    partition_ru: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON data."""
        data = asdict(self)
        data["rules"] = [str(r) for r in self.rules]
        data["queue_rates"] = dict(self.queue_rates)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultPlan:
        """A plan from JSON data (missing fields: no fault)."""
        unknown = set(data) - {"rules", "latency_ms", "tail", "tail_seconds", "retry_after_ms", "queue_rates",
                               "partition_ru"}
        if unknown:
            raise PlanError(f"fault plan has unknown fields: {', '.join(sorted(unknown))}")
        return cls(rules=tuple(Rule.parse(str(r)) for r in data.get("rules") or ()),
                   latency_ms=float(data.get("latency_ms") or 0), tail=float(data.get("tail") or 0),
                   tail_seconds=float(data.get("tail_seconds") or 0),
                   retry_after_ms=int(data.get("retry_after_ms") or 100),
                   queue_rates={str(k): float(v) for k, v in (data.get("queue_rates") or {}).items()},
                   partition_ru=float(data.get("partition_ru") or 0))

    def pick(self, service: str, kind: str, rng: random.Random) -> str | None:
        """The injected answer for one request, or None to forward it (rules tried in order)."""
        for rule in self.rules:
            if rule.applies(service, kind) and rng.random() < rule.rate:
                return rule.answer
        return None

    def delay(self, rng: random.Random) -> float:
        """Seconds to hold one request before handling it."""
        if self.tail and rng.random() < self.tail:
            return self.tail_seconds
        if self.latency_ms > 0:
            return rng.expovariate(math.log(2) / (self.latency_ms / 1000.0))
        return 0.0

    def queue_rate(self, queue: str) -> float:
        """The messages/s limit of a queue (0: none)."""
        return float(self.queue_rates.get(queue, self.queue_rates.get("*", 0.0)))


class _Bucket:
    """A token bucket of `rate` per second holding at most one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at = time.monotonic()

    def take(self, cost: float) -> float:
        """Take `cost` tokens and return 0, or take nothing and return the seconds until there are."""
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


@dataclass(frozen=True)
class Route:
    """One listener: `service` on `port`, forwarding to `upstream` (`tls`: serve HTTPS)."""

    service: str
    port: int
    upstream: str
    tls: bool = False


class Stats:
    """What the proxy saw and did, by `service/kind`."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.limited: Counter[str] = Counter()
        self.forwarded_by_queue: Counter[str] = Counter()
        self.delayed = 0

    def to_json(self) -> dict[str, Any]:
        """The counts as JSON data."""
        return {"requests": dict(self.requests), "injected": dict(self.injected), "limited": dict(self.limited),
                "forwarded_by_queue": dict(self.forwarded_by_queue), "delayed": self.delayed}


def _kind(service: str, request: web.Request) -> str:
    """The operation kind of a request, as the clients' own counters name it."""
    url = str(request.rel_url)
    if service == "queue":
        return queue_operation(request.method, url)
    if service == "blob":
        return blob_operation(request.method, url)
    return operation_of(request.method, request.path, request.headers)


def _queue_of(path: str) -> str:
    """The queue name in a path-style Azurite URL (`/<account>/<queue>/messages`)."""
    parts = [p for p in path.split("/") if p]
    return parts[1] if len(parts) > 1 else ""


def _storage_error(status: int, code: str, message: str) -> web.Response:
    request_id = str(uuid.uuid4())
    body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}\n'
            f"RequestId:{request_id}\nTime:{time.strftime('%Y-%m-%dT%H:%M:%S.0000000Z', time.gmtime())}"
            "</Message></Error>")
    return web.Response(status=status, body=body.encode(), headers={
        "Content-Type": "application/xml", "x-ms-error-code": code, "x-ms-request-id": request_id,
        "x-ms-version": "2018-03-28", "Date": formatdate(usegmt=True)})


def _cosmos_error(status: int, code: str, message: str, substatus: int, retry_after_ms: int | None) -> web.Response:
    headers = {"Content-Type": "application/json", "x-ms-activity-id": str(uuid.uuid4()),
               "x-ms-substatus": str(substatus), "x-ms-request-charge": "0", "Date": formatdate(usegmt=True)}
    if retry_after_ms is not None:
        headers["x-ms-retry-after-ms"] = str(retry_after_ms)
    body = json.dumps({"code": code, "message": f"Message: {{\"Errors\":[\"{message}\"]}}"})
    return web.Response(status=status, body=body.encode(), headers=headers)


def fault_answer(service: str, answer: str, retry_after_ms: int) -> web.Response:
    """Azure's answer `answer` (a status) for `service`, headers and body as Azure sends them."""
    if service in ("queue", "blob"):
        if answer == "500":
            return _storage_error(500, "OperationTimedOut", "Operation could not be completed within the "
                                  "specified time.")
        return _storage_error(503, "ServerBusy", "The server is busy.")
    if answer == "429":
        return _cosmos_error(429, "TooManyRequests", "Request rate is large. More Request Units may be needed, "
                             "so no changes were made. Please retry this request later.", 3200, retry_after_ms)
    if answer == "408":
        return _cosmos_error(408, "RequestTimeout", "Request timed out.", 0, None)
    return _cosmos_error(503, "ServiceUnavailable", "Service is currently unavailable.", 21008, None)


class FaultProxy:
    """The proxy's listeners and state; `await start()`, then `await stop()`."""

    def __init__(self, routes: list[Route], plan: FaultPlan, seed: int | None = None) -> None:
        self.routes = routes
        self.plan = plan
        self.stats = Stats()
        self._rng = random.Random(seed)
        self._buckets: dict[tuple[str, float], _Bucket] = {}
        self._runners: list[web.AppRunner] = []
        self._session: ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None
        self.ports: dict[str, int] = {}

    async def start(self) -> None:
        """Listen on every route's port (0: a free one, see `ports`)."""
        self._session = ClientSession(connector=TCPConnector(limit=256, ssl=False), auto_decompress=False,
                                      timeout=ClientTimeout(total=120))
        for route in self.routes:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handler(route))
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", route.port, ssl_context=self._tls() if route.tls else None,
                               backlog=512)
            await site.start()
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.ports[route.service] = int(sockets[0].getsockname()[1]) if sockets else route.port
            self._runners.append(runner)

    async def stop(self) -> None:
        """Close the listeners and the upstream connections."""
        for runner in self._runners:
            await runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            from flowcraft_celery.devtools.testcerts import make_certs

            files = make_certs(Path(tempfile.mkdtemp(prefix="faultproxy-")))
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.load_cert_chain(files.cert, files.key)
        return self._ssl

    def _bucket(self, key: str, rate: float) -> _Bucket:
        bucket = self._buckets.get((key, rate))
        if bucket is None:
            bucket = self._buckets[(key, rate)] = _Bucket(rate)
        return bucket

    def _limited(self, route: Route, kind: str, request: web.Request) -> web.Response | None:
        """The rate limiter's refusal of this request, if it is over its queue's or partition's limit."""
        plan = self.plan
        if route.service == "queue" and kind in ("send", "receive", "delete", "update", "peek"):
            queue = _queue_of(request.path)
            rate = plan.queue_rate(queue)
            if rate > 0 and self._bucket(f"q:{queue}", rate).take(1.0) > 0:
                self.stats.limited[f"queue/{queue}"] += 1
                return _storage_error(503, "ServerBusy", "Operations per second is over the account limit.")
        if route.service == "cosmos" and plan.partition_ru > 0 and kind.startswith("docs:"):
            op = kind.partition(":")[2]
            cost = RU_COST.get(op, WRITE_RU)
            partition = f"{request.path.split('/docs')[0]}|{request.headers.get('x-ms-documentdb-partitionkey', '*')}"
            wait = self._bucket(f"p:{partition}", plan.partition_ru).take(cost)
            if wait > 0:
                self.stats.limited["cosmos/partition"] += 1
                return _cosmos_error(429, "TooManyRequests", "Request rate is large.", 3200,
                                     max(1, math.ceil(wait * 1000)))
        return None

    def _handler(self, route: Route) -> Any:
        upstream = route.upstream.rstrip("/")
        upstream_host = urlsplit(upstream).netloc

        async def handle(request: web.Request) -> web.StreamResponse:
            if request.path.startswith(CONTROL):
                return await self._control(request)
            body = await request.read()
            kind = _kind(route.service, request)
            key = f"{route.service}/{kind}"
            self.stats.requests[key] += 1
            wait = self.plan.delay(self._rng)
            if wait > 0:
                self.stats.delayed += 1
                await asyncio.sleep(wait)
            answer = self.plan.pick(route.service, kind, self._rng)
            if answer == "reset":
                self.stats.injected[f"{key}/reset"] += 1
                _reset(request)
                return web.Response(status=500)
            if answer is not None:
                self.stats.injected[f"{key}/{answer}"] += 1
                return fault_answer(route.service, answer, self.plan.retry_after_ms)
            refused = self._limited(route, kind, request)
            if refused is not None:
                return refused
            if route.service == "queue" and kind in ("send", "receive", "delete", "update"):
                self.stats.forwarded_by_queue[_queue_of(request.path)] += 1
            return await self._forward(route, request, body, upstream, upstream_host)

        return handle

    async def _forward(self, route: Route, request: web.Request, body: bytes, upstream: str,
                       upstream_host: str) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(request.method, upstream + str(request.rel_url), headers=headers,
                                         data=body if body else None, allow_redirects=False,
                                         skip_auto_headers=("Content-Type", "User-Agent", "Accept-Encoding",
                                                            "Accept")) as answer:
            data = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
        if route.service == "cosmos" and request.method == "GET" and request.path == "/":
            # the emulator names its own endpoint as the account's location: keep the SDK on the proxy
            data = data.replace(f"//{upstream_host}/".encode(), f"//{request.host}/".encode())
        return web.Response(status=answer.status, body=data, headers=out)

    async def _control(self, request: web.Request) -> web.Response:
        what = request.path[len(CONTROL):]
        if what == "stats" and request.method == "GET":
            return web.json_response(self.stats.to_json())
        if what == "stats" and request.method == "DELETE":
            self.stats = Stats()
            return web.json_response({})
        if what == "plan" and request.method == "GET":
            return web.json_response(self.plan.to_json())
        if what == "plan" and request.method == "PUT":
            try:
                self.plan = FaultPlan.from_json(await request.json())
            except (PlanError, ValueError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            self._buckets.clear()
            return web.json_response(self.plan.to_json())
        return web.json_response({"error": "unknown control request"}, status=404)


def _reset(request: web.Request) -> None:
    """Drop the client's connection with a TCP reset (no answer at all)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def serve(routes: list[Route], plan: FaultPlan, ready: Any = None, seed: int | None = None) -> None:
    """Run the proxy until cancelled; `ready(ports)` is called once it listens."""
    proxy = FaultProxy(routes, plan, seed)
    await proxy.start()
    try:
        if ready is not None:
            ready(proxy.ports)
        await asyncio.Event().wait()
    finally:
        await proxy.stop()


def proxied_env(env: Mapping[str, str], ports: Mapping[str, int]) -> dict[str, str]:
    """The app's environment (`devservices.env_vars` style) with the proxied endpoints on `ports`."""
    out = dict(env)
    storage = out.get("AZURE_STORAGE_CONNECTION_STRING", "")
    parts = []
    for segment in storage.split(";"):
        name, _, value = segment.partition("=")
        endpoint = {"QueueEndpoint": "queue", "BlobEndpoint": "blob"}.get(name, "")
        if endpoint in ports and value:
            url = urlsplit(value)
            value = url._replace(netloc=f"127.0.0.1:{ports[endpoint]}").geturl()
        parts.append(f"{name}={value}" if segment else segment)
    if storage:
        out["AZURE_STORAGE_CONNECTION_STRING"] = ";".join(parts)
    cosmos = out.get("AZURE_COSMOS_CONNECTION_STRING", "")
    if cosmos and "cosmos" in ports:
        out["AZURE_COSMOS_CONNECTION_STRING"] = ";".join(
            f"AccountEndpoint=https://127.0.0.1:{ports['cosmos']}/" if s.startswith("AccountEndpoint=") else s
            for s in cosmos.split(";"))
    return out


class ProxyControl:
    """A client of a running proxy's control endpoints (any one listener's port)."""

    def __init__(self, port: int, tls: bool = False) -> None:
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{CONTROL}"

    def _call(self, method: str, what: str, data: Any = None) -> Any:
        import requests

        response = requests.request(method, self.url + what, json=data, timeout=10, verify=False)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        """The proxy's counts so far."""
        return dict(self._call("GET", "stats"))

    def reset_stats(self) -> None:
        """Zero the proxy's counts."""
        self._call("DELETE", "stats")

    def set_plan(self, plan: FaultPlan) -> None:
        """Replace the proxy's plan at once."""
        self._call("PUT", "plan", plan.to_json())
