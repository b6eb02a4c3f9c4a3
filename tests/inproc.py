"""The command line run in this process: the same main(), its exit code, its stdout and stderr.

A new Python costs seconds of torch import per call; tests that need a real process (kills,
signals, a terminal) start one instead."""

from __future__ import annotations

import contextlib
import io
import subprocess


def edgekit(*args: object) -> subprocess.CompletedProcess:
    from edgekit.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
