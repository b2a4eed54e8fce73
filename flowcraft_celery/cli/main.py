"""The `flowcraft-celery` command: a registry of commands, one line each; each lives in its own module.

Commands fail in one line with a documented exit code (`cli/errors.py`); add a new command in
a module of its own and register it below with `main.add_command(...)`.
"""

from __future__ import annotations

import logging

import click

from flowcraft_celery.cli.authoring import run_command, validate_command
from flowcraft_celery.cli.blueprints import blueprints_command
from flowcraft_celery.cli.conformance import conformance_command
from flowcraft_celery.cli.demo import demo_command
from flowcraft_celery.cli.errors import EXIT_CODES_HELP, CommandGroup, debug_option
from flowcraft_celery.cli.graph import graph_command
from flowcraft_celery.cli.metrics import metrics_command
from flowcraft_celery.cli.purge import purge_command
from flowcraft_celery.cli.queues import dlq_group, queues_command
from flowcraft_celery.cli.reconcile import reconcile_command
from flowcraft_celery.cli.runs import cancel_command, resume_command, runs_command, status_command
from flowcraft_celery.cli.show import show_command
from flowcraft_celery.cli.start import start_command
from flowcraft_celery.cli.webhooks import webhooks_group
from flowcraft_celery.devtools.devservices import services_command
from flowcraft_celery.devtools.faultproxy_cli import fault_proxy_command


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP,
             params=[debug_option()])
@click.version_option(package_name="flowcraft-celery")
def main() -> None:
    """Flowcraft-style workflows on Celery, Azure Queue Storage, Cosmos DB and Redis."""


# The Azure SDKs log what they cannot parse (an HTML 404 page, with its traceback) as warnings, and the
# outage log warns when a service stops answering: Python prints both on stderr when nothing is
# configured, while the command's own one-line error already names the service that does not answer.
for quiet in ("azure", "flowcraft.outages"):
    logging.getLogger(quiet).addHandler(logging.NullHandler())

main.add_command(validate_command)
main.add_command(run_command)
main.add_command(conformance_command)
main.add_command(blueprints_command)
main.add_command(start_command)
main.add_command(status_command)
main.add_command(runs_command)
main.add_command(resume_command)
main.add_command(cancel_command)
main.add_command(reconcile_command)
main.add_command(show_command)
main.add_command(graph_command)
main.add_command(purge_command)
main.add_command(queues_command)
main.add_command(dlq_group)
main.add_command(webhooks_group)
main.add_command(metrics_command)
main.add_command(services_command)
main.add_command(fault_proxy_command)
main.add_command(demo_command)
