"""Where a run's state lives: the store protocols and their memory, Cosmos DB and Redis versions.

Layer: imports nothing of flowcraft_celery above it. `base` declares the protocols (context,
status, coordination); `memory` serves the local runner and unit tests; `cosmos` (with
`cosmos_client`, the one place that builds Cosmos clients) holds context, outputs and status;
`redis` holds joins, claims and locks; `ledger` the pending node messages of a run.
"""
