"""`python -m flowcraft_celery.cli`: the same as the `flowcraft-celery` command."""

from flowcraft_celery.cli.main import main

main()
