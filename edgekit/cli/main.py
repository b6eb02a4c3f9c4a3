"""The edgekit command group and its one error handler: an EdgekitError becomes one line on stderr
and its exit code, here and only here. Each stage's commands live in their own module."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from edgekit.cli.demo import demo
from edgekit.cli.deploy import export_deepstream_cmd, export_triton_cmd
from edgekit.cli.export import export, import_cmd, train_cmd
from edgekit.cli.options import _WARNED, _echo_err, _warn_profiles
from edgekit.cli.quant import calibrate, eval_cmd
from edgekit.cli.runtime import bench, classify, inspect, run
from edgekit.cli.trt import build, profiles
from edgekit.cli.zoo import models
from edgekit.errors import EdgekitError
from edgekit.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """Inception classifiers from PyTorch through ONNX to TensorRT, for Jetson and desktop GPUs.

    \b
    Example:
      edgekit export --model inception_v4 -o build/inception_v4
      edgekit classify build/inception_v4 photo.jpg
    """


def _flush_stdout() -> str | None:
    """Flush stdout now, while an error can still be told in one line (a full disk, a closed pipe);
    afterwards stdout points at /dev/null so the interpreter's exit prints no traceback."""
    try:
        sys.stdout.flush()
        return None
    except (OSError, ValueError) as exc:
        import os

        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, sys.stdout.fileno())
            os.close(fd)
        except (OSError, ValueError):
            pass
        return getattr(exc, "strerror", None) or str(exc)


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the same clean-up, the same exit code (130)


def main(argv: list[str] | None = None) -> None:
    import signal
    import threading

    code = 0
    _WARNED.clear()
    here = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _terminated) if here else None  # run and train set their own
    try:
        cli.main(args=argv, prog_name="edgekit", standalone_mode=False)
    except click.exceptions.Abort:  # click's form of Ctrl-C (and of SIGTERM, raised as one)
        _echo_err("interrupted; nothing was left half-written")
        code = 130
    except click.UsageError as exc:  # click's own (a missing option, a bad value): one line like ours
        see = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        _echo_err(f"error: {exc.format_message()}{see}")
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except (EdgekitError, OSError) as exc:
        code = _report(exc)
    except KeyboardInterrupt:
        _echo_err("interrupted; nothing was left half-written")
        code = 130
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    _warn_profiles()
    failed = _flush_stdout()
    if failed and code == 0:
        _echo_err(f"error: cannot write to stdout: {failed}")
        code = 1
    sys.exit(code)


def _report(exc: BaseException) -> int:
    """One line for an error the user can act on, and its exit code (README, "Exit codes");
    EDGEKIT_DEBUG=1 prints the traceback first, for a bug report."""
    if os.environ.get("EDGEKIT_DEBUG"):
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)
    if isinstance(exc, EdgekitError):
        _echo_err(f"error: {exc}")
        return exc.exit_code
    assert isinstance(exc, OSError)  # a file the checks missed: still one line, never a traceback
    where = f"{exc.filename}: " if exc.filename else ""
    _echo_err(f"error: {where}{exc.strerror or exc}")
    gone = isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError))
    return 2 if gone else 1


for _command in (models, export, train_cmd, import_cmd, inspect, classify, calibrate, build, profiles, eval_cmd,
                 run, bench, export_deepstream_cmd, export_triton_cmd, demo):
    cli.add_command(_command)
