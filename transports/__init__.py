"""Kombu transports shipped with flowcraft-celery; importing this registers `azurequeue://` with Kombu."""

from kombu.transport import TRANSPORT_ALIASES

TRANSPORT_ALIASES.setdefault("azurequeue", "transports.azurequeue:Transport")
