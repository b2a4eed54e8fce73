"""The local runner: a whole run in one process (`flowcraft-celery run --local`, unit tests).

Layer: above `engine` and `stores`; it only schedules work and keeps state in memory stores,
every decision is the engine's. Nothing here imports Celery or the distributed layer.
"""
