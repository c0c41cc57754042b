"""Messages as one line: every error the adapters report to a person is one line."""

from __future__ import annotations

__all__ = ["error_line", "one_line"]


def one_line(text: object) -> str:
    """``text`` as one line: newlines and runs of white space become single spaces."""
    return " ".join(str(text).split())


def error_line(exc: BaseException) -> str:
    """An exception as one line; its type name when it has no message."""
    return one_line(exc) or type(exc).__name__
