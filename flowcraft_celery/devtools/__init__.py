"""Developer tooling: dev services, real worker processes, the demo and the conformance runner.

Layer: above every runtime layer (it drives the local runner and real Celery workers); nothing
below imports it. `devservices` (Azurite, the Cosmos emulator, Redis on loopback), `background`
(detached processes by PID file), `workers` (real `celery worker`/`beat` processes), `demo`,
`conformance` and `conformance_celery` (scenario runners), `behaviours` (their node vocabulary).
"""
