"""The `flowcraft-celery` command line, the top layer: it may import every layer below it."""
