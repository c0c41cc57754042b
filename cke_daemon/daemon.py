"""``cke``: the engine daemon (leader election, the reconcile loop, HTTP API).

The daemon arrives with the runtime issues; until then the entry point says so
instead of pretending to run.
"""

from __future__ import annotations

import sys

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cke-py", prog_name="cke")
def cke() -> None:
    """Run the CKE engine (not available in this version; use `ckecli`)."""
    click.echo("cke: the engine daemon is not available in this version yet", err=True)
    sys.exit(1)


def main() -> None:
    cke()
