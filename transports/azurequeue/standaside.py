"""When requests made beside an Azure SDK leave the work to it for a while.

After a throttle, a server error or a failed fresh connection the signed-here path stands aside
for `STAND_ASIDE` seconds, so a sick service gets the SDK's back-off alone; after a refused
signature (401, 403: a clock or key the SDK handles differently) for `REFUSED_ASIDE`, with one
warning naming the setting that turns the path off.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)

#: Seconds the SDK takes the requests alone after a throttle, a server error or a failed new connection.
STAND_ASIDE = 10.0
#: Seconds the SDK takes the requests alone after the service refused the path's signature.
REFUSED_ASIDE = 600.0


class StandAside:
    """The stand-aside clock of one signed-here path (`what`: its requests, `off`: how to turn it off)."""

    def __init__(self, service: str, endpoint: str, what: str, off: str) -> None:
        self._service, self._endpoint, self._what, self._off = service, endpoint, what, off
        self._until = 0.0
        self._told_refused = False

    @property
    def active(self) -> bool:
        """Whether the SDK takes every request now."""
        return time.monotonic() < self._until

    def connection_failed(self, fresh: bool) -> None:
        """A request's connection failed: a fresh one means the service is unreachable (a kept-alive
        one may just have been closed by the server)."""
        if fresh:
            self._until = time.monotonic() + STAND_ASIDE

    def answered(self, status: int) -> None:
        """The service answered `status`, not the one expected."""
        if status in (401, 403):
            self._until = time.monotonic() + REFUSED_ASIDE
            if not self._told_refused:
                self._told_refused = True
                logger.warning("%s at %s refused %s (%s); the Azure SDK makes them for the next %.0f s (%s "
                               "to always use it)", self._service, self._endpoint, self._what, status,
                               REFUSED_ASIDE, self._off)
        elif status >= 500 or status in (408, 429):
            self._until = time.monotonic() + STAND_ASIDE
