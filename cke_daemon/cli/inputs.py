"""Reading operator files for the CLI: FILE or ``-`` for standard input."""

from __future__ import annotations

import sys
from pathlib import Path

from cke_daemon.cli.errors import CLIError


def read_text(name: str) -> str:
    """The text of ``name`` (``-`` = stdin), or a one-line CLIError naming the cause."""
    try:
        if name != "-":
            return Path(name).read_bytes().decode("utf-8")
        stream = getattr(sys.stdin, "buffer", None)  # absent when stdin is replaced by text
        return stream.read().decode("utf-8") if stream is not None else sys.stdin.read()
    except FileNotFoundError:
        raise CLIError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"{name}: is a directory") from None
    except PermissionError:
        raise CLIError(f"{name}: permission denied") from None
    except UnicodeDecodeError as exc:
        where = "standard input" if name == "-" else name
        raise CLIError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise CLIError(f"{name}: {exc.strerror}") from None
