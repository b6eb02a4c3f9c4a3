"""The .venv-keras environment (pinned TensorFlow and tf2onnx) for the Keras import test, made at most once.

Making it is mostly download and unpacking (tens of seconds), so the session starts it in a thread as soon
as collection shows the test will run (tests/conftest.py), while other tests use the CPU; the fixture then
waits for it. A failure is the test's failure, not a skip: make test installs from a package index anyway,
and a skipped foreign exporter would let the import's only real foreign-model check go silently missing.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-keras"
PINS = ("tensorflow-cpu==2.21.0", "tf2onnx==1.17.0")

_lock = threading.Lock()
_thread: threading.Thread | None = None
_error: list[str] = []


def _make() -> None:
    python = VENV / "bin" / "python"
    stamp = VENV / ".edgekit-pins"
    if python.exists() and stamp.exists() and stamp.read_text().split() == list(PINS):
        return
    steps = ([] if python.exists() else [[sys.executable, "-m", "venv", str(VENV)]]) + [
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS]]
    for cmd in steps:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            _error.append(f"cannot make {VENV.name} ({' '.join(cmd[-3:])}: {exc})")
            return
        if done.returncode:
            tail = (done.stderr.strip().splitlines() or ["?"])[-1]
            _error.append(f"cannot make {VENV.name} ({' '.join(cmd[-3:])}: {tail}); the Keras import test needs pip "
                          "to reach a package index once")
            return
    stamp.write_text("\n".join(PINS) + "\n")


def start() -> None:
    """Begin making the environment in the background (once per session)."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_make, name="make .venv-keras", daemon=True)
            _thread.start()


def python() -> tuple[Path | None, str]:
    """(the environment's interpreter, '') once it is made; (None, why) when it could not be."""
    start()
    assert _thread is not None
    _thread.join()
    return (None, _error[0]) if _error else (VENV / "bin" / "python", "")
