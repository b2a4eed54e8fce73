"""Cosmos store costs: latency and requests per operation, against the emulator.

    .venv/bin/python bench/cosmos_ops.py [--n 200]

Reads AZURE_COSMOS_CONNECTION_STRING / FLOWCRAFT_COSMOS_VERIFY_TLS (`flowcraft-celery services
up` prints them). Uses a throwaway database and deletes it.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

from azure.cosmos import CosmosClient

from flowcraft_celery.stores.cosmos import CosmosContextStore, CosmosStatusStore
from flowcraft_celery.stores.cosmos_client import (
    connection_string_from_env,
    get_client,
    parse_connection_string,
    request_counts,
    reset_request_counts,
    verify_tls_from_env,
)


def measure(name: str, n: int, op: Callable[[int], object]) -> None:
    """Run `op` n times; print median and p95 latency and requests per call by type."""
    reset_request_counts()
    times = []
    for i in range(n):
        started = time.perf_counter()
        op(i)
        times.append((time.perf_counter() - started) * 1000)
    per_call = {k: round(v / n, 2) for k, v in sorted(request_counts().items())}
    p95 = sorted(times)[int(0.95 * (n - 1))]
    print(f"{name:32s} median {statistics.median(times):6.2f} ms  p95 {p95:6.2f} ms  {per_call}")


def main() -> None:
    """Measure each store operation and the plain-SDK client for comparison."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    n = parser.parse_args().n
    client = get_client()
    database = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        ctx = CosmosContextStore(client, database=database)
        status = CosmosStatusStore(client, database=database)
        run = "bench-run"
        status.create({"runId": run, "blueprintId": "bench"})
        measure("context set", n, lambda i: ctx.set(run, f"k{i}", {"i": i}))
        measure("context get", n, lambda i: ctx.get(run, f"k{i}"))
        measure("record_output + touch", n, lambda i: (
            ctx.record_output(run, f"n{i}", 0, {"i": i}), status.touch(run)))
        measure("status get", n, lambda i: status.get(run))
        measure("context snapshot (2n keys)", 5, lambda i: ctx.snapshot(run))
        account = parse_connection_string(connection_string_from_env())
        plain = CosmosClient(account.endpoint, account.key, connection_verify=verify_tls_from_env())
        container = plain.get_database_client(database).get_container_client("runs")
        item_id = f"run:{run}"
        measure("status read, plain SDK client", n, lambda i: container.read_item(item_id, run))
    finally:
        client.delete_database(database)


if __name__ == "__main__":
    main()
