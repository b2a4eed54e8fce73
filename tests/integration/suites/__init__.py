"""Kombu's and Celery's own integration suites against this project (a CI-sized part)."""
