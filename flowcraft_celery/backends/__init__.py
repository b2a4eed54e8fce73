"""Celery result backends: `cosmos://` (Celery task results in Cosmos DB).

Layer: above `stores` (it shares `stores.cosmos_client`); registered through the
`celery.result_backends` entry point, so Celery loads it by URL scheme.
"""
