"""Runs on Celery: the app, the node task, the run lifecycle, reconcile, operator tools, the client.

Layer: above `engine`, `stores`, `backends` and the `transports` package. Sub-packages, top to
bottom (import-linter keeps imports going down, function-level imports included):

- `client` (the Python API for callers), `serverless` (one queue message without a worker);
- `app`: the Celery app, its settings, signals, tasks and beat schedule;
- `ops` (metrics, the run view, queue listings, the webhook server) and `reconcile` (beat's
  recovery pass and the evidence it reads);
- `node`: the node task executing one node message, its lease, dead-lettering;
- `runs`: a run's lifecycle (start, publish, await, resume, cancel, complete, fail, rebuild);
- `core`: settings, per-process runtime wiring, problems, log context, secrets.
"""
