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
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.errors import DiskFullError, EdgekitError
from edgekit.runners import usable_cores
from edgekit.runtime.cpu_routes import NAMES, PRECISIONS, Choice, Route, Trial

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
    """The cached choice for ``key``; None when there is none, it cannot be read, or it is not
    exactly what ``measure`` writes: one trial per candidate, the chosen one timed and passed
    (a file edited by hand, damaged, or another program's: measuring again costs seconds, trusting
    it could run an ungated path). Only the route and the trials' figures are taken from the file;
    the CPU, batch and threads are this process's own (they are in the key)."""
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
        chosen = [t for t in trials if t.route == route]
        if sorted(map(str, (t.route for t in trials))) != sorted(map(str, candidates)) \
                or chosen[0].ms is None or chosen[0].failed:
            return None
        when = data["measured_at"]
        if not (isinstance(when, str) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", when)):
            return None
        return Choice(route, trials, 0, 0, "", when, True)  # the caller fills in batch, threads and CPU
    except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, RecursionError):
        return None  # UnicodeDecodeError is a ValueError; RecursionError: JSON nested deeper than Python's stack
    finally:
        os.close(fd)


def _number(v: Any, none: bool = False, signed: bool = False) -> float | None:
    """A finite, plausible figure (under 1e6: a millisecond figure of 1000 s is no measurement)."""
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"not a measurement: {v!r}")
    f = float(v)  # OverflowError for a huge integer
    if not (-1.0 if signed else 0.0) <= f < 1e6 and not (f == float("inf") and not signed):
        raise ValueError(f"not a measurement: {v!r}")
    return f


def _route(d: Any) -> Route:
    if not isinstance(d, dict) or set(d) != {"backend", "precision"} or d["backend"] not in NAMES \
            or d["precision"] not in PRECISIONS:
        raise ValueError(f"not a CPU path: {d!r}")
    return Route(d["backend"], d["precision"])


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1_000_000:
        raise ValueError(f"not a count: {v!r}")
    return v


def _trial(d: Any) -> Trial:
    if not isinstance(d, dict) or not isinstance(d.get("failed", ""), str):
        raise ValueError("not a trial")
    ms = _number(d["ms"], none=True)
    if ms is not None and (ms == float("inf") or ms <= 0):
        raise ValueError("not a time")
    failed = "".join(c for c in d.get("failed", "")[:300] if c.isprintable())  # no escapes reach a terminal
    return Trial(_route(d["route"]), _number(d["startup_s"]) or 0.0, ms, _number(d["rel_error"]) or 0.0,
                 _number(d["cosine"], signed=True) or 0.0, _count(d["top1_equal"]), _count(d["images"]), failed)


def write_cached(key: dict[str, Any], choice: Choice) -> str:
    """Keep ``choice``; returns '' or why it could not be kept."""
    data = {"key": key, "route": asdict(choice.route), "trials": [asdict(t) for t in choice.trials],
            "batch": choice.batch, "threads": choice.threads, "cpu": choice.cpu, "measured_at": choice.measured_at}
    f = cache_file(key)
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        bundle_mod.remove_dead_temp_files(f.parent)  # a process killed between write and rename
        bundle_mod.write_text_atomic(f, json.dumps(data, indent=1))
    except DiskFullError:  # a full disk only costs the measurement, like any unwritable folder
        why = "the disk is full"
    except (OSError, EdgekitError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    else:
        return ""
    return f"the measurement was not cached ({why}: {f}), so it runs at every start"


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
    except OSError:
        yield None
        return
    lock = cache_file(key).with_suffix(".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK, 0o666)
    except OSError as exc:  # a folder or a link there: measured without the lock, kept if the folder takes it
        log(f"note: {lock} cannot be used as a lock ({exc.strerror}); measuring without waiting for others")
        yield folder if os.access(folder, os.W_OK) else None
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
