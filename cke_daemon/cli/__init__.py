"""``ckecli``: the administrator's command line, with CKE's verbs.

Every failure ends with one clear line on stderr and a non-zero exit code;
a traceback is shown only with ``CKE_DEBUG=1``.

Commands that use the event log reach it at ``--store URL`` (or
``$CKE_EVENT_LOG``; default ``./var/cke-events.db``): ``sqlite:///PATH`` or a
plain path, ``etcd://HOST:PORT[,HOST:PORT]/PREFIX``.
"""

from __future__ import annotations

import os
import sys

import click

from cke_daemon.cli.cluster import cluster
from cke_daemon.cli.errors import run_cli
from cke_daemon.cli.history import history, plan, replay, status
from cke_daemon.cli.lab import lab
from cke_daemon.cli.log import cluster_get, cluster_set, constraints, events
from cke_daemon.cli.queues import reboot_queue, repair_queue


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cke-py", prog_name="ckecli")
@click.option(
    "--store",
    metavar="URL",
    envvar="CKE_EVENT_LOG",
    help="The event log: sqlite:///PATH (or a path), etcd://HOST:PORT[,...]/PREFIX "
    "[env: CKE_EVENT_LOG; default: ./var/cke-events.db].",
)
def ckecli(store: str | None) -> None:
    """Administer a CKE cluster: configuration, history, queues, PKI.

    Set CKE_DEBUG=1 to see tracebacks of internal errors.
    """


ckecli.add_command(cluster)
cluster.add_command(cluster_set)
cluster.add_command(cluster_get)
ckecli.add_command(constraints)
ckecli.add_command(constraints, "cstr")
ckecli.add_command(history)
ckecli.add_command(status)
ckecli.add_command(replay)
ckecli.add_command(plan)
ckecli.add_command(events)
ckecli.add_command(lab)
ckecli.add_command(reboot_queue)
ckecli.add_command(reboot_queue, "rq")
ckecli.add_command(repair_queue)


def main() -> None:
    sys.exit(run_cli(ckecli, debug=os.environ.get("CKE_DEBUG") == "1"))
