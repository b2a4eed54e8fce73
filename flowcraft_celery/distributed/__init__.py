"""Runs on Celery: the app, one task per node, the run lifecycle, reconcile, the client.

Layer: above `engine`, `stores`, `backends` and the `transports` package. `app` (the Celery
app and its tasks), `bridge` (executing one node message), `runs` (start, publish, finish,
cancel, resume), `reconcile` (beat's recovery pass), `lease` (locks renewed while a node runs),
`runtime` (per-process wiring of stores from the settings), `client` (the Python API for
callers) and `serverless` (one queue message without a worker, for Azure Functions).
"""
