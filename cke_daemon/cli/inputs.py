"""Reading operator files for the CLI: FILE or ``-`` for standard input."""

from __future__ import annotations

import sys
from pathlib import Path

from cke_daemon.cli.errors import CLIError


def read_text(name: str) -> str:
    """The text of ``name`` (``-`` = stdin), or a one-line CLIError naming the cause."""
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CLIError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"{name}: is a directory") from None
    except PermissionError:
        raise CLIError(f"{name}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise CLIError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise CLIError(f"{name}: {exc.strerror}") from None
