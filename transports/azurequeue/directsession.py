"""A `requests` session that hands an Azure SDK request straight to its adapter.

azure-core sends every request through `Session.request`, which builds a `Request`, prepares
it against the session (cookies, auth, netrc, hooks), merges environment settings and then
walks `Session.send` (cookie extraction, redirect resolution). Azure's REST calls use none of
that: they carry their own authorization, set no cookies, and azure-core asks for no
redirects. That bookkeeping was about a tenth of a worker's CPU per node. `DirectSession`
prepares the request itself (method, URL, the session's default headers, body) and calls the
mounted adapter, so the same connection pools, TLS settings, timeouts and proxies apply. A
call that asks for anything it skips (redirects, cookies, auth, hooks, params, JSON, or a
session that trusts the environment) takes the ordinary `requests` path.
"""

from __future__ import annotations

from typing import Any

from requests import PreparedRequest, Response, Session
from requests.sessions import merge_setting
from requests.structures import CaseInsensitiveDict


class DirectSession(Session):
    """A session whose plain requests go from preparation straight to the mounted adapter."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False

    def request(
        self, method: str | bytes, url: str | bytes, params: Any = None, data: Any = None,
        headers: Any = None, cookies: Any = None, files: Any = None, auth: Any = None,
        timeout: Any = None, allow_redirects: bool = True, proxies: Any = None, hooks: Any = None,
        stream: bool | None = None, verify: Any = None, cert: Any = None, json: Any = None,
    ) -> Response:
        """Send the request; the full `requests` path only when it asks for what is skipped here."""
        text_method = method.decode() if isinstance(method, bytes) else method
        text_url = url.decode() if isinstance(url, bytes) else url
        if (allow_redirects or params or cookies or auth or hooks or json is not None or self.trust_env
                or self.auth or self.cookies or self.params or any(self.hooks.values())):
            return super().request(text_method, text_url, params=params, data=data, headers=headers,
                                   cookies=cookies, files=files, auth=auth, timeout=timeout,
                                   allow_redirects=allow_redirects, proxies=proxies, hooks=hooks, stream=stream,
                                   verify=verify, cert=cert, json=json)
        prepared = PreparedRequest()
        prepared.prepare_method(text_method)
        prepared.prepare_url(text_url, None)
        prepared.prepare_headers(merge_setting(headers, self.headers, dict_class=CaseInsensitiveDict))
        prepared.prepare_body(data or {}, files)
        response = self.get_adapter(url=prepared.url or "").send(
            prepared, stream=bool(stream), timeout=timeout, cert=cert if cert is not None else self.cert,
            verify=verify if verify is not None else self.verify, proxies=proxies or {})
        if not stream:
            response.content  # noqa: B018 - reads the body now, as Session.send does
        return response
