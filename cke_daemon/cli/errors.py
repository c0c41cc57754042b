"""One place that turns every failure into a one-line message and an exit code."""

from __future__ import annotations

import traceback

import click

from cke_core.problems import ConfigError

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70


class CLIError(click.ClickException):
    """An expected failure (unreadable file, unreachable store ...): message, exit 1."""

    exit_code = EXIT_INVALID

    def show(self, file: object = None) -> None:
        click.echo(f"ckecli: {self.format_message()}", err=True)


def run_cli(command: click.Command, *, debug: bool = False) -> int:
    try:
        command.main(standalone_mode=False, prog_name=command.name)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("ckecli: aborted", err=True)
        return EXIT_INVALID
    except click.UsageError as exc:
        # One line naming the command, instead of click's usage block.
        where = exc.ctx.command_path if exc.ctx is not None else command.name
        click.echo(f"{where}: {' '.join(exc.format_message().split())}", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        return EXIT_INVALID
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"ckecli: internal error: {type(exc).__name__}: {exc}", err=True)
        return EXIT_INTERNAL
    return EXIT_OK
