"""``edgekit models``: the model zoo, as a table or JSON."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json: bool) -> None:
    """List the model zoo.

    \b
    Example:
      edgekit models
    """
    from edgekit.zoo import list_models

    specs = list_models()
    if as_json:
        click.echo(json.dumps([{
            "name": s.name, "version": s.version, "input_size": s.input_size,
            "params_m": s.params_m, "weights": [w.name for w in s.weights] + ["random", "PATH"],
            "definition": s.definition,
        } for s in specs], indent=2))
        return
    rows = [("name", "version", "input", "params", "weights", "definition")]
    for s in specs:
        sources = ", ".join([f"{w.name} ({w.provider})" for w in s.weights] + ["random", "PATH"])
        rows.append((s.name, s.version, f"{s.input_size}x{s.input_size}", f"{s.params_m:.1f} M",
                     sources, s.definition))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))
