"""The operator tests' settings: celeryconfig plus secrets planted where Celery and Flower look.

The Redis URL carries a password (a private redis-server with `requirepass`), and the storage
account and Cosmos DB connection strings, account keys included, are put in the settings
themselves (not only in the environment); none of them may show in any report, reply or log.
"""

import os

from celeryconfig import *  # noqa: F403
from celeryconfig import broker_transport_options as _broker_options

cosmos_connection_string = os.environ["AZURE_COSMOS_CONNECTION_STRING"]
broker_transport_options = {**_broker_options, "connection_string": os.environ["AZURE_STORAGE_CONNECTION_STRING"]}
