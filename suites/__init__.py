"""Plug-ins that run kombu's and Celery's own integration suites against this project (`suites/run.py`)."""
