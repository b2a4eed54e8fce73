"""pytest plug-in for Celery's t/integration run by `suites/run.py` (`-p suites.celery_plugin`).

Registers the `azurequeue://` transport alias with Kombu before Celery's fixtures build the
session app and worker; the `cosmos://` backend registers itself through the
`celery.result_backends` entry point of the installed package.
"""

from __future__ import annotations

import transports  # noqa: F401  (registers azurequeue:// with Kombu)
