"""A throwaway HTTP server on loopback for the transport's HTTP tests."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

from flowcraft_celery.devtools.testcerts import CertFiles


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], tls: CertFiles | None = None) -> Iterator[HTTPServer]:
    """Serve `handler` on a free loopback port (over TLS with `tls`'s certificate) in a thread for
    the block, then stop it."""
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
