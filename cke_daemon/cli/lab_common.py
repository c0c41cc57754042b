"""What the ``ckecli lab`` commands share: root only, every failure one line
(``ckecli lab: ...``, exit 1; bad arguments exit 2), the ``--dir`` option."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from cke_adapters.images import ImageError
from cke_adapters.lab.manage import DEFAULT_LAB_DIR
from cke_adapters.lab.netns import LabError
from cke_adapters.oneline import error_line
from cke_adapters.ssh import SSHError

from cke_daemon.cli.errors import EXIT_INVALID, EXIT_USAGE

__all__ = ["DIR_OPTION", "ROOT_REQUIRED", "LabCommandError", "LabUsageError", "lab_errors"]

F = TypeVar("F", bound=Callable[..., Any])

ROOT_REQUIRED = "must run as root (network namespaces, sshd, podman)"


class LabCommandError(click.ClickException):
    """A lab failure: ``ckecli lab: <message>`` on one line, exit 1."""

    exit_code = EXIT_INVALID

    def show(self, file: object = None) -> None:
        click.echo(f"ckecli lab: {self.format_message()}", err=True)


class LabUsageError(click.ClickException):
    """Bad arguments: ``ckecli lab[ CMD]: <message>`` on one line, exit 2."""

    exit_code = EXIT_USAGE

    def __init__(self, command: str, message: str) -> None:
        super().__init__(message)
        self.command = command

    def show(self, file: object = None) -> None:
        click.echo(f"{self.command}: {self.format_message()}", err=True)


def lab_errors(function: F) -> F:
    """Root check first, then every expected lab failure as one line."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.geteuid() != 0:
            raise LabCommandError(ROOT_REQUIRED)
        try:
            return function(*args, **kwargs)
        except (LabError, ImageError, SSHError, OSError) as exc:
            raise LabCommandError(error_line(exc)) from exc

    return wrapper  # type: ignore[return-value]


DIR_OPTION = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_LAB_DIR,
    show_default=True,
    help="The lab's directory: SSH key, known_hosts, cluster.yml, lab.json, node files.",
)
