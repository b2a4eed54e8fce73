"""Kombu transports shipped with flowcraft-celery; importing this registers `azurequeue://`
(and the Celery worker step that hands unstarted messages back on a warm shutdown)."""

from kombu.transport import TRANSPORT_ALIASES

from transports.azurequeue import handback  # noqa: F401  (connects to `celeryd_init`)

TRANSPORT_ALIASES.setdefault("azurequeue", "transports.azurequeue:Transport")
