"""A run's lifecycle on Celery: start, publish, await, resume, cancel, end, recover, expire.

Shared by the client (start, resume, cancel), the node task (publish, await, end) and the
reconciler (re-publish, complete). Modules, bottom to top: `errors`, `graphs` (the graph a run
executes), `publishing` (node messages onto the broker), `delayed`, `retention` (records
expiring, `purge`), `ending` (`fail_run`, a run's final result), `awaiting`, `starting`
(`start_run`, all or nothing), `recovery` (`complete_run` on durable evidence, rebuilding
Redis from Cosmos), `control` (`resume_run`, `cancel_run`), `webhooks` (a webhook node's URL
and its delivery). A run completes only through `recovery.complete_run` and fails only through
`ending.fail_run`.
"""
