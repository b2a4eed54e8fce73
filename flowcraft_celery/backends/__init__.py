"""Celery result backends."""
