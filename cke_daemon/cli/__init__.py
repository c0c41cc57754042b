"""``ckecli``: the administrator's command line, with CKE's verbs.

Every failure ends with one clear line on stderr and a non-zero exit code;
a traceback is shown only with ``CKE_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys

import click

from cke_daemon.cli.cluster import cluster
from cke_daemon.cli.errors import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cke-py", prog_name="ckecli")
def ckecli() -> None:
    """Administer a CKE cluster: configuration, history, queues, PKI.

    Set CKE_DEBUG=1 to see tracebacks of internal errors.
    """


ckecli.add_command(cluster)


def main() -> None:
    sys.exit(run_cli(ckecli, debug=os.environ.get("CKE_DEBUG") == "1"))
