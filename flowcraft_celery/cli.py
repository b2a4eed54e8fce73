"""The `flowcraft-celery` command line: validate, run, conformance, dev services, and run control."""

from __future__ import annotations

import click

from flowcraft_celery.devservices import services_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flowcraft-celery")
def main() -> None:
    """Flowcraft-style workflows on Celery, Azure Queue Storage, Cosmos DB and Redis."""


main.add_command(services_command)
