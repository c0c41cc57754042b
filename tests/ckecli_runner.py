"""Running ``ckecli`` in tests: in this process as ``main()`` does
(``run_cli``), or the installed command in a subprocess."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import pytest

from cke_daemon.cli import ckecli
from cke_daemon.cli.errors import run_cli

#: The installed command, next to this interpreter.
CKECLI = Path(sys.executable).with_name("ckecli")


@attrs.frozen
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


#: ``run(*args, stdin="")``: ckecli with ``args``.
Cli = Callable[..., Result]


def inproc_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    prefix: Sequence[str | Path] = (),
) -> Cli:
    """ckecli run in this process with ``prefix`` then the given arguments; a
    traceback on stderr fails the test (every failure must be one line)."""

    def run(*args: str | Path, stdin: str = "") -> Result:
        monkeypatch.setattr(sys, "argv", ["ckecli", *map(str, prefix), *map(str, args)])
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        capsys.readouterr()
        code = run_cli(ckecli)
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return Result(code, out, err)

    return run


def installed_cli(*args: str | Path, stdin: str | bytes = b"") -> Result:
    """Run the installed ``ckecli`` as an operator would."""
    env = {k: v for k, v in os.environ.items() if k != "CKE_DEBUG"}
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [str(CKECLI), *map(str, args)],
        input=data,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    return Result(
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )
