"""Output sinks off the inference thread, each on its own thread and queue (``SinkThread``), and
how a failed output is told (``SinkError``, ``sink_error``)."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    from edgekit.runtime.streaming import Result


class SinkError(EdgekitError):
    """An output could not be written (a full disk, a closed pipe, a sink that raised)."""


def _describe(sink: Any) -> str:
    return str(getattr(sink, "describe", type(sink).__name__))


def sink_error(sink: Any, exc: BaseException) -> EdgekitError:
    """One line naming the output, the cause and what to do."""
    if isinstance(exc, EdgekitError):
        return exc
    if isinstance(exc, OSError):
        import errno

        what = _describe(sink)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            where = getattr(sink, "folder", None)
            free = ""
            if where is not None:
                import shutil

                try:
                    free = f" ({shutil.disk_usage(where).free / 1e6:.0f} MB free at {where})"
                except OSError:
                    pass
            return SinkError(f"cannot write {what}: the disk is full or the file too large{free}; free "
                             "space or write elsewhere")
        if exc.errno == errno.EPIPE:
            return SinkError(f"cannot write {what}: the reader of the pipe has gone")
        return SinkError(f"cannot write {what}: {exc.strerror or exc}")
    return SinkError(f"{_describe(sink)} failed: {type(exc).__name__}: {exc}")


class _Worker:
    """One sink on its own thread and queue: a sink that stalls (a pipe nobody reads) or fails
    holds up only itself."""

    def __init__(self, sink: Any, maxsize: int) -> None:
        self.sink = sink
        self.q: queue.Queue[Result | None] = queue.Queue(maxsize=maxsize)
        self.error: EdgekitError | None = None
        self.written = 0
        self.lost = 0  # results it never got (it failed, stalled, or the run was stopped while it lagged)
        self.t = threading.Thread(target=self._run, name=f"edgekit-sink-{type(sink).__name__}", daemon=True)
        self.t.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is not None:
                self.lost += 1
                continue
            try:
                self.sink.write(item)
                self.written += 1
            except BaseException as exc:  # noqa: BLE001 - any sink failure is reported, none kills the thread
                self.error = sink_error(self.sink, exc)
                self.lost += 1


class SinkThread:
    """Runs the output sinks off the inference thread, each on its own thread; results queue up
    only here.

    A sink that fails is set aside (its error is raised by the next put() and by close()); the
    others keep writing. put() never blocks for good: it gives up on a lagging sink once a stop is
    requested. close() writes everything queued, then closes every sink (a sink's file is closed
    only after its thread is done with it), so no result already produced is lost."""

    def __init__(self, sinks: list[Any], maxsize: int = 64, stop: Callable[[], bool] | None = None) -> None:
        self.sinks = sinks
        self.workers = [_Worker(s, maxsize) for s in sinks]
        self._stop = stop or (lambda: False)
        self.error: EdgekitError | None = None
        self.abandoned: list[str] = []  # sinks still stuck in a write at close, never closed

    def _first_error(self) -> EdgekitError | None:
        if self.error is None:
            self.error = next((w.error for w in self.workers if w.error is not None), None)
        return self.error

    @property
    def written(self) -> int:
        """Results every healthy sink has taken."""
        return min((w.written for w in self.workers if w.error is None), default=0)

    def put(self, r: Result) -> None:
        """Queue a result for every sink; raises the first sink failure."""
        err = self._first_error()
        if err is not None:
            raise err
        bare = None
        for w in self.workers:
            item = r
            if r.frame is not None and not getattr(w.sink, "draws", False):
                # only sinks that draw keep the frame: a lagging JSON sink's queue holds results,
                # not 64 full frames (400 MB at 1080p on an 8 GB board)
                bare = bare or dataclasses.replace(r, frame=None)
                item = bare
            while w.error is None:
                try:
                    w.q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    if self._stop():  # stopping: a lagging sink does not hold the run
                        w.lost += 1
                        break

    @staticmethod
    def _finish(w: _Worker, timeout: float | None) -> None:
        """Hand the worker its end and wait while it makes progress; ``timeout``: how long it may
        make none before it is left (stuck in a write)."""
        sent = False
        last, since = -1, time.monotonic()
        while w.t.is_alive():
            if not sent:
                try:
                    w.q.put(None, timeout=0.1)
                    sent = True
                except queue.Full:
                    pass
            else:
                w.t.join(0.1)
            done, now = w.written + w.lost, time.monotonic()
            if done != last:
                last, since = done, now
            elif timeout is not None and now - since > timeout:
                return

    def close(self, timeout: float | None = None) -> None:
        """Write what is queued and close every sink, then raise the first failure (if any).

        ``timeout``: how long to wait for a sink stuck in a write (None: as long as it takes, or 5 s
        once a stop was requested); a sink still stuck is abandoned, the others are closed."""
        if timeout is None and self._stop():
            timeout = 5.0
        for w in self.workers:
            self._finish(w, timeout)
        for w in self.workers:
            if w.t.is_alive():  # stuck in write(): closing its file under it could crash the process
                self.abandoned.append(_describe(w.sink))
                if w.error is None:
                    w.error = SinkError(f"{_describe(w.sink)} stopped responding (a full pipe nobody reads?); "
                                        f"{w.q.qsize()} results not written")
                continue
            try:
                w.sink.close()
            except BaseException as exc:  # noqa: BLE001 - close them all, report the first
                if w.error is None:
                    w.error = sink_error(w.sink, exc)
        err = self._first_error()
        if err is not None:
            raise err
