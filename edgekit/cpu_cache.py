"""Where backend auto keeps its CPU-path measurement (cpu tier): one small JSON file per bundle,
CPU and library versions, in EDGEKIT_CACHE/cpu-choice/ (~/.cache/edgekit/cpu-choice/).

The key holds the candidates' files (sha256), the CPU (model and instruction sets), the cores this
process may use (affinity), ONNX Runtime's and OpenVINO's versions and the thread count; any change
measures again, and so does deleting the folder (after moving the machine, or a measurement taken
under load). The file is trusted only as far as it is checked: a choice among this bundle's gated
paths, with a timed trial for it and every field of its type; anything else (damaged, edited, a
FIFO, over MAX_CACHE_BYTES) is measured again. An unreadable or unwritable folder only costs the
measurement. Processes starting together (one node per camera) measure once: the first holds
DIGEST.lock (flock, released if it dies) and the others wait for its result.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.cpu_choice import NAMES, PRECISIONS, Choice, Route, Trial
from edgekit.runners import usable_cores

CACHE_VERSION = 1
MAX_CACHE_BYTES = 1 << 20  # a choice is a few kB; anything bigger is not one
_NONBLOCK, _NOFOLLOW = getattr(os, "O_NONBLOCK", 0), getattr(os, "O_NOFOLLOW", 0)  # Unix only
LOCK_WAIT_S = 120.0  # another process measuring the same bundle: wait this long for its result


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_CACHE") or Path.home() / ".cache" / "edgekit") / "cpu-choice"


def cache_key(man: mf.Manifest, candidates: list[Route], cpu: Any, threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    from edgekit.runners.openvino import version as ov_version

    files = {r.model: getattr(man.artifact("onnx", r.model), "sha256", None) for r in candidates}
    return {"version": CACHE_VERSION, "routes": [[r.backend, r.precision] for r in candidates], "files": files,
            "fp32": files.get("fp32") or getattr(man.artifact("onnx", "fp32"), "sha256", None),
            "input": [str(d) for d in man.input.shape], "cpu": cpu.describe(), "onnxruntime": str(ort.__version__),
            "openvino": ov_version(), "threads": threads, "cores": usable_cores()}


def cache_file(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / f"{digest}.json"


def read_cached(key: dict[str, Any], candidates: list[Route]) -> Choice | None:
    """The cached choice for ``key``; None when there is none, it cannot be read, or it is not a
    choice among ``candidates`` with a timed trial for its route (a file edited by hand, or by
    another edgekit: measuring again costs seconds, trusting it could run an ungated path)."""
    try:
        fd = os.open(cache_file(key), os.O_RDONLY | _NONBLOCK)  # a FIFO there must not block the load
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CACHE_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = json.loads(f.read(MAX_CACHE_BYTES).decode("utf-8"))
        if not isinstance(data, dict) or data.get("key") != key:
            return None
        route = _route(data["route"])
        trials = tuple(_trial(t) for t in data["trials"])
        timed = [t for t in trials if t.route == route and t.ms is not None]
        if route not in candidates or not timed or any(t.route not in candidates for t in trials):
            return None
        batch, threads = data["batch"], data["threads"]
        if not (_is_int(batch) and _is_int(threads) and batch > 0 and threads > 0):
            return None
        if not (isinstance(data["cpu"], str) and isinstance(data["measured_at"], str)):
            return None
        return Choice(route, trials, batch, threads, data["cpu"][:200], data["measured_at"][:40], True)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # UnicodeDecodeError is a ValueError
        return None
    finally:
        os.close(fd)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any, none: bool = False, signed: bool = False) -> float | None:
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or (v < 0 and not signed):
        raise ValueError(f"not a measurement: {v!r}")
    return float(v)


def _route(d: Any) -> Route:
    if not isinstance(d, dict) or set(d) != {"backend", "precision"} or d["backend"] not in NAMES \
            or d["precision"] not in PRECISIONS:
        raise ValueError(f"not a CPU path: {d!r}")
    return Route(d["backend"], d["precision"])


def _trial(d: Any) -> Trial:
    if not isinstance(d, dict) or not _is_int(d.get("top1_equal")) or not _is_int(d.get("images")) \
            or not isinstance(d.get("failed", ""), str):
        raise ValueError("not a trial")
    ms = _number(d["ms"], none=True)
    if ms is not None and (ms == float("inf") or ms <= 0):
        raise ValueError("not a time")
    return Trial(_route(d["route"]), _number(d["startup_s"]) or 0.0, ms, _number(d["rel_error"]) or 0.0,
                 _number(d["cosine"], signed=True) or 0.0, d["top1_equal"], d["images"], d.get("failed", "")[:300])


def write_cached(key: dict[str, Any], choice: Choice) -> str:
    """Keep ``choice``; returns '' or why it could not be kept."""
    data = {"key": key, "route": asdict(choice.route), "trials": [asdict(t) for t in choice.trials],
            "batch": choice.batch, "threads": choice.threads, "cpu": choice.cpu, "measured_at": choice.measured_at}
    f = cache_file(key)
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        bundle_mod.remove_dead_temp_files(f.parent)  # a process killed between write and rename
        bundle_mod.write_text_atomic(f, json.dumps(data, indent=1))
    except OSError as exc:
        return f"the measurement was not cached ({exc.strerror or exc} at {f.parent}), so it runs at every start"
    return ""


@contextlib.contextmanager
def measuring(key: dict[str, Any], log: Callable[[str], None]) -> Iterator[Path | None]:
    """Hold ``DIGEST.lock`` in the cache folder while measuring, so that processes starting
    together (a launch file starting one node per camera) measure once, not each against the
    others' load; yields the folder, or None when it cannot be written (nothing will be kept).
    A holder that died releases the lock with it (flock); one that takes over LOCK_WAIT_S is
    not waited for further."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(cache_file(key).with_suffix(".lock"), os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK,
                     0o666)
    except OSError:
        yield None
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            yield folder
            return
        try:
            import fcntl
        except ImportError:  # Windows: no flock; measuring twice costs seconds, nothing more
            yield folder
            return
        deadline, said = time.monotonic() + LOCK_WAIT_S, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):  # ENOLCK: NFS without locks
                    log(f"note: {folder} cannot be locked ({exc.strerror}); measuring without waiting for others")
                    break
                if time.monotonic() > deadline:
                    log(f"note: another process has been measuring this bundle for {LOCK_WAIT_S:.0f} s; "
                        "measuring here as well")
                    break
                if not said:
                    log("another process is measuring the CPU paths for this bundle; waiting for its result")
                    said = True
                time.sleep(0.1)
        yield folder
    finally:
        os.close(fd)  # releases the flock
