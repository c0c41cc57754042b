"""``ckecli cluster``: the cluster configuration."""

from __future__ import annotations

import click

from cke_core import codec
from cke_core.config import check_cluster, check_constraints
from cke_core.documents import dump_json, dump_yaml
from cke_core.problems import ConfigError, Problem
from cke_core.validation import check_against_constraints
from cke_daemon.cli.inputs import read_text


@click.group()
def cluster() -> None:
    """Cluster configuration (cluster.yml)."""


@cluster.command()
@click.argument("file", metavar="FILE|-")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="Format of the normalised configuration.",
)
@click.option(
    "--constraints",
    "constraints_file",
    metavar="FILE",
    help="Also check the cluster against these constraints (as `ckecli cluster set` does).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def validate(file: str, output: str, constraints_file: str | None, quiet: bool) -> None:
    """Load FILE, apply CKE's defaults, validate, and print the normalised configuration.

    Every problem is reported on stderr as `path.to.field: message`, and the
    exit code is 1 if any is an error. Warnings do not fail the command.
    """
    checked = check_cluster(read_text(file))
    problems: list[Problem] = list(checked.problems)
    if constraints_file is not None:
        constraints = check_constraints(read_text(constraints_file))
        problems += [
            Problem(f"constraints.{p.path}" if p.path else "constraints", p.message, p.severity)
            for p in constraints.problems
        ]
        if checked.value is not None and constraints.value is not None and not constraints.errors:
            problems += check_against_constraints(checked.value, constraints.value)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigError(errors + [p for p in problems if p.severity == "warning"])
    for problem in problems:
        click.echo(str(problem), err=True)
    if quiet or checked.value is None:
        return
    data = codec.unstructure(checked.value)
    click.echo(dump_json(data) if output == "json" else dump_yaml(data), nl=False)
