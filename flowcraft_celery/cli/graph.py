"""`flowcraft-celery graph BLUEPRINT [--run RUN]`: a Mermaid diagram, coloured by a run's states."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("graph")
@click.argument("blueprint")
@click.option("--run", "run_id", default=None, help="Colour each node by its state in this run (and add the "
              "run's dynamic nodes).")
@click.option("--direction", type=click.Choice(["TD", "LR"]), default="TD", show_default=True,
              help="Top-down or left-to-right.")
def graph_command(blueprint: str, run_id: str | None, direction: str) -> None:
    """Print BLUEPRINT (an id of the catalog, or a JSON file) as a Mermaid flowchart.

    With --run, BLUEPRINT is the run's blueprint id and each node has the colour of its state.
    """
    from flowcraft_celery.model.blueprint import Blueprint, BlueprintFormatError
    from flowcraft_celery.model.diagram import mermaid
    from flowcraft_celery.model.graph import Graph

    if run_id is not None:
        from flowcraft_celery.distributed.client import Client
        from flowcraft_celery.distributed.ops.runview import run_view
        from flowcraft_celery.distributed.runs.errors import RunError

        try:
            view = run_view(Client().runtime, run_id)
        except RunError as exc:
            raise click.ClickException(str(exc)) from exc
        if view.graph is None:
            raise click.ClickException(f"run {run_id!r} uses blueprint {view.doc.get('blueprintId')!r}, "
                                       "which neither the workers' published catalog nor FLOWCRAFT_BLUEPRINTS here has")
        if blueprint != view.graph.blueprint.id:
            raise click.ClickException(f"run {run_id!r} is of blueprint {view.graph.blueprint.id!r}, "
                                       f"not {blueprint!r}")
        click.echo(mermaid(view.graph, view.node_states(), direction), nl=False)
        return
    if Path(blueprint).is_file():
        try:
            graph = Graph(Blueprint.load(blueprint))
        except BlueprintFormatError as exc:
            raise click.ClickException(f"{blueprint}: {exc}") from exc
    else:
        from flowcraft_celery.distributed.client import Client

        client = Client()
        found = client.runtime.blueprints.get(blueprint)
        if found is None:
            known = ", ".join(sorted(client.blueprints())) or "none: no worker of this deployment published any"
            raise click.ClickException(f"no blueprint {blueprint!r} in the catalog and no such file (known: {known})")
        graph = Graph(found)
    click.echo(mermaid(graph, None, direction), nl=False)
