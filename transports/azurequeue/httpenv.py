"""The HTTP settings `requests` reads from the environment, read once per endpoint.

A `requests` session that trusts the environment looks up proxies (``HTTPS_PROXY``,
``NO_PROXY``, ...), ``~/.netrc`` and the CA bundle (``REQUESTS_CA_BUNDLE``) again on every
request: about 0.2 ms of CPU each, several times per node. The transport's sessions do not
trust the environment and get the same proxies and CA bundle from here instead, looked up
once per endpoint (a process talks to one or two). ``~/.netrc`` is not used: Azure requests
carry their own authorization.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

from requests.utils import get_environ_proxies


class HttpEnvironment:
    """Proxies per endpoint and the CA bundle, from the environment as `requests` reads them."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        #: A CA bundle named by the environment replaces the default store when verifying.
        self.ca_bundle = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or None
        self._proxies: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def proxies(self, url: str) -> dict[str, str]:
        """The proxies for `url`'s endpoint (``NO_PROXY`` applied), looked up once per endpoint."""
        parts = urlsplit(url)
        endpoint = f"{parts.scheme}://{parts.netloc}"
        found = self._proxies.get(endpoint)
        if found is None:
            found = dict(get_environ_proxies(f"{endpoint}/", None))
            with self._lock:
                self._proxies[endpoint] = found
        return found

    def verify(self, verify: bool | str) -> bool | str:
        """What to verify TLS with: the environment's CA bundle in place of the default store."""
        return self.ca_bundle if verify is True and self.ca_bundle else verify
