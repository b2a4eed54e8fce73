"""The bottom tier of the Celery side: settings, per-process runtime wiring, problems and their messages, log
context, secrets.
"""
