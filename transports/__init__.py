"""Kombu transports shipped with flowcraft-celery."""
