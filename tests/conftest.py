"""Shared fixtures: bundles exported once per session from random weights (nothing downloaded).

A fixture setup that runs longer than NOTICE_AFTER_S (training, exporting, calibrating) says so on
the terminal, past pytest's output capture: what it is once it has run that long, and the time it
took when it ends. Exports made by ``export_bundle`` inside a test say so the same way.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, Any

import pytest

# Tests never reach a model hub: a download attempt fails at once with the offline error.
os.environ.setdefault("EDGEKIT_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# ... nor the user's cache: the session's CPU-path measurements and engine caches go to a folder of its
# own (kept across the session's tests, as a user's are across runs; a test that needs it empty says so).
if "EDGEKIT_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["EDGEKIT_CACHE"] = tempfile.mkdtemp(prefix="edgekit-test-cache-")
    atexit.register(shutil.rmtree, os.environ["EDGEKIT_CACHE"], True)


NOTICE_AFTER_S = 5.0


class _LongSetupNotices:
    """A plugin (registered, so that session-scoped fixtures are seen too: a conftest's hooks reach only
    the nodes below it). One watcher thread: once the step in progress has run NOTICE_AFTER_S, it writes
    what the step is to a copy of the terminal's file descriptor taken before capture redirects it; the
    step's end writes the time taken through pytest's terminal reporter with capture suspended. A step
    inside a step (a fixture that exports) stays quiet: the outer one speaks for it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.reporter: Any = None
        self.capman: Any = None
        self.term: IO[str] | None = None
        self._cv = threading.Condition()
        self._active: list | None = None  # [what and detail, started, said]
        self._watcher: threading.Thread | None = None
        self._nodeid: str | None = None  # the test being run, whose line pytest has begun

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self._nodeid = nodeid

    def pytest_runtest_logfinish(self) -> None:
        self._nodeid = None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        self.capman = self.config.pluginmanager.get_plugin("capturemanager")
        if self.reporter is None:
            return
        with self._uncaptured():
            try:
                self.term = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", errors="replace")
            except (AttributeError, OSError, ValueError):  # stdout is not a file: only the end lines
                self.term = None

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        with self._cv:
            if self.term is not None:
                self.term.close()
                self.term = None

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> Any:
        try:
            where = os.path.relpath(inspect.getsourcefile(fixturedef.func) or "", self.config.rootpath)
        except (TypeError, ValueError):
            where = fixturedef.baseid
        doc = (fixturedef.func.__doc__ or "").strip().splitlines()
        detail = f": {doc[0].rstrip('.')}" if doc else ""
        with self.step(f"setting up fixture {fixturedef.argname} ({fixturedef.scope} scope, {where})", detail):
            return (yield)

    def _uncaptured(self) -> Any:
        return self.capman.global_and_fixture_disabled() if self.capman is not None else nullcontext()

    @contextmanager
    def step(self, what: str, detail: str = "") -> Iterator[None]:
        with self._cv:
            if self.reporter is None or self._active is not None:
                act = None
            else:
                act = self._active = [what + detail, time.monotonic(), False]
                if self._watcher is None:
                    self._watcher = threading.Thread(target=self._watch, name="long-setup-notices", daemon=True)
                    self._watcher.start()
                self._cv.notify()
        if act is None:
            yield
            return
        ok = False
        try:
            yield
            ok = True
        finally:
            with self._cv:
                self._active = None
            if act[2]:
                self._end_line(f"    {what}: {'done' if ok else 'failed'} in {time.monotonic() - act[1]:.0f} s")

    def _end_line(self, text: str) -> None:
        """The line after the notice, then the test's own progress where pytest would have put it."""
        tr = self.reporter
        with self._uncaptured():
            tr.write("\n" + text)
            tr.currentfspath = None
            if self._nodeid is not None and tr.verbosity <= 0 and getattr(tr, "showfspath", True):
                tr.write_fspath_result(self._nodeid, "")  # a new line with the file's name, dots after it
            elif self._nodeid is None or tr.verbosity <= 0:
                tr.write("\n")  # (-v: pytest starts the test's line itself)

    def _watch(self) -> None:
        with self._cv:
            while True:
                act = self._active
                if act is None or act[2]:
                    self._cv.wait()
                    continue
                left = act[1] + NOTICE_AFTER_S - time.monotonic()
                if left > 0:
                    self._cv.wait(left)
                    continue
                act[2] = True
                if self.term is not None:  # under the lock: the step's end line waits for this one
                    try:
                        self.term.write(f"\n    {act[0]} (started {NOTICE_AFTER_S:.0f} s ago) ...")
                        self.term.flush()
                    except (OSError, ValueError):
                        pass


_NOTICES: _LongSetupNotices | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _NOTICES
    _NOTICES = _LongSetupNotices(config)
    config.pluginmanager.register(_NOTICES, "edgekit-long-setup-notices")


def long_step(what: str, detail: str = "") -> Any:
    """A context manager: says ``what`` and ``detail`` on the terminal if it runs longer than NOTICE_AFTER_S,
    then ``what`` and the time it took."""
    return _NOTICES.step(what, detail) if _NOTICES is not None else nullcontext()


@pytest.fixture(scope="session")
def export_bundle(tmp_path_factory: pytest.TempPathFactory):
    """export_bundle(model, **options) -> bundle path, cached per argument set."""
    from edgekit.export.torch_onnx import ExportRequest, export

    cache: dict[tuple, Path] = {}

    def make(model: str, **kw) -> Path:
        key = (model, tuple(sorted(kw.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("bundles") / model
            kw.setdefault("weights", "random")
            options = ", ".join(f"{k}={v}" for k, v in sorted(kw.items()))
            with long_step(f"exporting {model} ({options})", " once, for every test of the session that asks for it"):
                cache[key] = export(ExportRequest(model, out, **kw)).bundle
        return cache[key]

    return make


@pytest.fixture(scope="session")
def googlenet_bundle(export_bundle) -> Path:
    """GoogLeNet exported from random weights, shared by the session's tests."""
    return export_bundle("googlenet")


@pytest.fixture(scope="session")
def calibrated_googlenet(googlenet_bundle, tmp_path_factory) -> Path:
    """googlenet_bundle calibrated on 16 of edgekit's photographs, gate off (random weights): every
    CPU form and its figures, for the tests that only read it (copy it to change it)."""
    import shutil

    from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle

    b = tmp_path_factory.mktemp("calibrated") / "googlenet"
    shutil.copytree(googlenet_bundle, b)
    with long_step("calibrating googlenet (16 photographs, gate off)", " once, for every test that reads it"):
        calibrate_bundle(CalibrateRequest(b, None, num_images=16, min_agreement=0.0))
    return b


def _gpu_here() -> str:
    """'' when an NVIDIA GPU answers, else why not (the skip reason of tests marked gpu)."""
    import glob
    import shutil
    import subprocess

    try:  # a Jetson before JetPack 6 has no nvidia-smi: its device tree says what it is
        if b"nvidia,tegra" in Path("/proc/device-tree/compatible").read_bytes() or glob.glob("/dev/nvhost-*"):
            return ""
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "no NVIDIA GPU here (no nvidia-smi, no Jetson); make test-gpu on a GPU machine runs these"
    try:
        subprocess.run([smi, "-L"], check=True, capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nvidia-smi fails ({exc}); no usable GPU"
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("keras_inception" in getattr(item, "fixturenames", ()) for item in items):
        from tests.foreign import keras_env

        keras_env.start()  # its download and unpacking overlap the tests before it
    why = None
    for item in items:
        if item.get_closest_marker("gpu") is None:
            continue
        why = _gpu_here() if why is None else why
        if why:
            item.add_marker(pytest.mark.skip(reason=why))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every edgekit module the tests loaded came from this checkout: an editable install of another checkout (a
    .pth or finder in the venv) would serve a module this layout no longer has, and tests would pass for it."""
    package = Path(__file__).resolve().parents[1] / "edgekit"
    stray = sorted(f"{name} from {mod.__file__}" for name, mod in list(sys.modules.items())
                   if (name == "edgekit" or name.startswith("edgekit.")) and getattr(mod, "__file__", None)
                   and package not in Path(mod.__file__).resolve().parents)
    if stray:
        sys.stderr.write("edgekit modules loaded from outside this checkout (check the venv's edgekit install):\n  "
                         + "\n  ".join(stray) + "\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
