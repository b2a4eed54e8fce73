"""Kept-alive HTTP connections for requests made beside an Azure SDK: one per thread, process and endpoint.

A forked child (a prefork pool process) never uses its parent's connection; a connection idle for
`IDLE_SECONDS` is replaced before use, since servers close idle keep-alive connections. Servers
close them sooner too (Azurite after 5-10 s): a request on a kept-alive connection that the server
closed while it was idle (the send breaks, or the answer is an immediate close) is sent once more
on a new connection (`exchange`), instead of leaving the request to the SDK as a failure.
"""

from __future__ import annotations

import http.client
import os
import ssl
import threading
import time

from .errors import AzureQueueError

#: A connection idle this long is replaced before use.
IDLE_SECONDS = 30.0
#: Seconds of socket inactivity (connect, send, each read) before a request is given up.
TIMEOUT = 60.0
#: What a request raises on a kept-alive connection that the server closed while it was idle.
CLOSED_WHILE_IDLE = (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected)


class Unanswered(AzureQueueError, OSError):
    """A request got no answer (the connection is dropped); `fresh`: it failed on a new
    connection, so the service may be unreachable (a kept-alive one may just have been closed)."""

    def __init__(self, cause: BaseException, fresh: bool) -> None:
        super().__init__(repr(cause))
        self.cause = cause
        self.fresh = fresh

_local = threading.local()


def _table() -> dict[tuple[int, str, str], tuple[http.client.HTTPConnection, float]]:
    if not hasattr(_local, "used"):
        _local.used = {}
    table: dict[tuple[int, str, str], tuple[http.client.HTTPConnection, float]] = _local.used
    return table


def take(scheme: str, netloc: str, context: ssl.SSLContext | None) -> tuple[http.client.HTTPConnection, bool]:
    """This thread's connection to the endpoint (`https` over `context`), and whether it was used before."""
    key = (os.getpid(), scheme, netloc)
    found = _table().get(key)
    if found is not None:
        connection, last = found
        if time.monotonic() - last < IDLE_SECONDS:
            return connection, True
        connection.close()
    connection = (http.client.HTTPSConnection(netloc, timeout=TIMEOUT, context=context)
                  if scheme == "https" else http.client.HTTPConnection(netloc, timeout=TIMEOUT))
    _table()[key] = (connection, time.monotonic())
    return connection, False


def answered(scheme: str, netloc: str, connection: http.client.HTTPConnection) -> None:
    """The connection took a request and answered it: keep it for the next one."""
    _table()[(os.getpid(), scheme, netloc)] = (connection, time.monotonic())


def drop(scheme: str, netloc: str, connection: http.client.HTTPConnection) -> None:
    """The connection failed: close it and make the next request open a new one."""
    connection.close()
    _table().pop((os.getpid(), scheme, netloc), None)


def exchange(scheme: str, netloc: str, context: ssl.SSLContext | None, method: str, target: str,
             body: bytes | None, headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
    """Send one request on this thread's connection to the endpoint and read its answer (the
    response and its body); a kept-alive connection the server closed while idle is replaced and
    the request sent once more. Unanswered when no answer came."""
    while True:
        connection, reused = take(scheme, netloc, context)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as exc:
            drop(scheme, netloc, connection)
            if reused and isinstance(exc, CLOSED_WHILE_IDLE):
                continue
            raise Unanswered(exc, fresh=not reused) from exc
        answered(scheme, netloc, connection)
        return response, answer
