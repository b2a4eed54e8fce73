"""An event receiver process for the transport tests: one `<type> <uuid> <hostname>` line per event."""

from __future__ import annotations

import sys
from typing import Any

from tests.integration.transports.transport_app import app


def main(path: str) -> None:
    """Capture every event of the test app and append it to `path`."""
    with open(path, "a", buffering=1) as out:

        def on_event(event: dict[str, Any]) -> None:
            out.write(f"{event.get('type')} {event.get('uuid', '-')} {event.get('hostname')}\n")

        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": on_event})
            receiver.capture(limit=None, timeout=None, wakeup=False)


if __name__ == "__main__":
    main(sys.argv[1])
