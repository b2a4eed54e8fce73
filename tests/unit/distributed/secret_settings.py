"""A configuration with a Redis password, a storage account key and a Cosmos key planted in it."""

from celeryconfig import *  # noqa: F403

REDIS_PASSWORD = "redis-Pa55word-planted"
STORAGE_KEY = "c3RvcmFnZS1hY2NvdW50LWtleS1wbGFudGVk"
COSMOS_KEY = "Y29zbW9zLWFjY291bnQta2V5LXBsYW50ZWQ="

flowcraft_redis_url = f"redis://:{REDIS_PASSWORD}@redis.example:6380/0"
cosmos_connection_string = f"AccountEndpoint=https://cosmos.example:443/;AccountKey={COSMOS_KEY};"
broker_transport_options = {
    "queue_name_prefix": "secrets-",
    "connection_string": "DefaultEndpointsProtocol=https;AccountName=acct;"
                         f"AccountKey={STORAGE_KEY};EndpointSuffix=core.windows.net",
}
