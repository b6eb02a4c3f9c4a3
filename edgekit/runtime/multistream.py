"""Many sources, one model: each round takes the newest frame of every source that has one and
classifies them in one batched call.

Each source keeps what a single stream has: its own capture thread with the newest frame only
(cameras, network streams, files paced like a camera), reconnects and drop count, or a reader
thread taking every frame in order (folders, ``--every-frame``), a couple of frames ahead. A
round asks every source for a frame, waits until one is ready, gives the others a few
milliseconds (a frame being decoded for this round), and runs the frames it has: a slow or lost
source never holds the others. A source that fails for good is reported and left; the others
go on, and the failure is raised when they have ended.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runtime import sources as src
from edgekit.runtime.classifier import Classifier, softmax
from edgekit.runtime.latest import LatestFrame
from edgekit.runtime.streaming import Played, Result, StreamOptions, _Opened, played_status, top_k

GRACE_S = 0.004  # after the first frame of a round is ready, how long the others get


class _InOrder:
    """A reader thread taking every frame in order, at most ``ahead`` frames ahead of the model;
    asked and taken from as a :class:`~edgekit.runtime.latest.LatestFrame` is (it drops nothing)."""

    dropped = 0
    reconnects = 0

    def __init__(self, reader: src.Reader, on_frame: Callable[[], None], ahead: int = 2) -> None:
        self.reader = reader
        self._q: queue.Queue[Any] = queue.Queue(maxsize=ahead)
        self._on_frame = on_frame
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.done = False
        self.state = "live"
        self._thread = threading.Thread(target=self._run, name="edgekit-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for fr in src.every_frame(self.reader):
                while not self._stop.is_set():
                    try:
                        self._q.put(fr, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
                self._on_frame()
        except BaseException as exc:  # handed to the consumer
            self.error = exc
        finally:
            self.reader.close()
            self.done = True
            self.state = "lost" if self.error is not None else "ended"
            self._on_frame()

    def ask(self) -> None:
        """Nothing to do: the thread reads ahead on its own."""

    @property
    def ready(self) -> bool:
        return self.done or not self._q.empty()

    def take(self) -> src.Frame | None:
        try:
            fr: src.Frame = self._q.get_nowait()
            return fr
        except queue.Empty:
            if self.done and self.error is not None:
                raise self.error from None
            return None

    @property
    def finished(self) -> bool:
        return self.done and self._q.empty()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Source:
    """One source of a :class:`MultiStream`: its name, counters and state."""

    def __init__(self, name: str, opened: _Opened, wake: Callable[[], None]) -> None:
        self.name = name
        self.fps = opened.fps
        self.kind = opened.kind
        self._opened = opened
        self.feed: LatestFrame | _InOrder
        if opened.capture is not None:
            self.feed = opened.capture
        else:
            assert opened.reader is not None
            self.feed = _InOrder(opened.reader, wake)
        self.results = 0
        self.error: BaseException | None = None  # why it was left, when it failed
        self.ewma: np.ndarray | None = None

    @property
    def dropped(self) -> int:
        return self.feed.dropped

    @property
    def reconnects(self) -> int:
        return self.feed.reconnects

    @property
    def skipped(self) -> list[tuple[Any, str]]:
        return list(self.feed.reader.skipped) if isinstance(self.feed, _InOrder) else []

    @property
    def state(self) -> str:
        return "lost" if self.error is not None else self.feed.state

    @property
    def played(self) -> Played | None:
        """A video file played at its own rate: its frames and rate (the summary's skipped-frames hint)."""
        return self._opened.played

    def status(self) -> dict[str, Any]:
        return {"dropped": self.dropped, "reconnects": self.reconnects, "state": self.state,
                "results": self.results, **played_status(self.played)}

    def ask(self) -> None:
        self.feed.ask()

    @property
    def ready(self) -> bool:
        return self.feed.ready

    def take(self) -> src.Frame | None:
        return self.feed.take()

    @property
    def finished(self) -> bool:
        if self.error is not None:
            return True
        try:
            return self.feed.finished
        except BaseException:  # noqa: BLE001 - a failure: take() raises it
            return False

    def stop(self) -> None:
        self.feed.stop()


def _unique(names: list[str]) -> list[str]:
    """Display names, made distinct (the same camera twice: 'camera 0', 'camera 0 #2')."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    return out


class MultiStream:
    """Iterate to get results of every source, each naming its source; stop() ends them all."""

    def __init__(self, sources: Sequence[str | int], clf: Classifier, options: StreamOptions | None = None,
                 on_event: Callable[[str], None] | None = None, keep_frames: bool = False,
                 opener: Callable[[src.SourceSpec], src.Reader] | None = None,
                 max_batch: int | None = None) -> None:
        if not sources:
            raise src.SourceInputError("no source given: name at least one camera, stream, file or folder")
        self.options = o = options or StreamOptions()
        self.clf = clf
        self._say = on_event or (lambda _: None)
        self._keep = keep_frames
        self._stop = threading.Event()
        self._wake = threading.Event()
        # calls take at least min_batch images (a static batch, or an engine built 4:4:4): fewer
        # frames are padded with copies whose rows are dropped; at most max_batch
        self._min = clf.min_batch
        limit = max_batch or clf.max_batch
        self.max_batch = max(self._min, min(limit, len(sources)) if limit else len(sources))
        specs = [src.parse(s, o.width, o.height, o.fps, o.sensor_mode) for s in sources]
        cams = [sp for sp in specs if sp.kind in ("v4l2", "csi")]
        twice = sorted({sp.display_name for sp in cams if sum(c.target == sp.target for c in cams) > 1})
        if twice:  # a V4L2 device streams to one reader, and Argus gives one session per sensor
            raise src.SourceInputError(f"{', '.join(twice)} given twice: a camera streams to one reader; give "
                                       "each camera once (files and stream URLs may repeat)")
        self.sources: list[Source] = []
        names = _unique([sp.display_name for sp in specs])
        # opened side by side: a stream URL that never answers costs its timeout once, not once per
        # source after it (CSI opens still take turns: sources._ARGUS)
        from concurrent.futures import ThreadPoolExecutor

        def open_one(k: int) -> _Opened:
            return _Opened(specs[k], o, self._event(names[k]), opener, self._wake.set)

        with ThreadPoolExecutor(max_workers=min(8, len(specs))) as pool:
            futures = [pool.submit(open_one, k) for k in range(len(specs))]
            error: BaseException | None = None
            for k, fut in enumerate(futures):
                try:
                    self.sources.append(Source(names[k], fut.result(), self._wake.set))
                except BaseException as exc:  # noqa: BLE001 - the first failure is raised below
                    error = error or exc
        if error is not None:
            self.stop()  # the ones that did open are closed
            raise error
        self.name = ", ".join(s.name for s in self.sources)
        self.results = 0
        self.rounds = 0

    def _event(self, name: str) -> Callable[[str], None]:
        return lambda text: self._say(f"{name}: {text}")

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.sources)

    @property
    def reconnects(self) -> int:
        return sum(s.reconnects for s in self.sources)

    @property
    def skipped(self) -> list[tuple[Any, str]]:
        return [x for s in self.sources for x in s.skipped]

    @property
    def played(self) -> Played | None:
        """None: each file's skipped frames are told in its own summary line (PerSource, from status())."""
        return None

    def status(self) -> dict[str, dict[str, Any]]:
        """Per source: dropped, reconnects, state (live, reconnecting, lost, ended), results."""
        return {s.name: s.status() for s in self.sources}

    @property
    def failed(self) -> list[Source]:
        return [s for s in self.sources if s.error is not None]

    def _round(self) -> list[tuple[Source, src.Frame]]:
        """The frames of one round: the newest of every source that has one."""
        active = [s for s in self.sources if not s.finished]
        if not active:
            return []
        self._wake.clear()
        for s in active:
            s.ask()
        if not any(s.ready for s in active):
            self._wake.wait(0.5)
        if any(s.ready for s in active):
            until = time.perf_counter() + GRACE_S
            while not all(s.ready for s in active) and time.perf_counter() < until:
                self._wake.clear()
                self._wake.wait(max(0.0, until - time.perf_counter()))
        got = []
        for s in active:
            try:
                fr = s.take()
            except (src.SourceError, EdgekitError, OSError) as exc:
                s.error = exc
                self._say(f"{s.name}: lost ({exc}); the other sources go on")
                continue
            if fr is not None:
                got.append((s, fr))
        return got

    def _classify(self, frames: list[tuple[Source, src.Frame]]) -> list[tuple[Source, Result]]:
        out = []
        for k in range(0, len(frames), self.max_batch):
            part = frames[k:k + self.max_batch]
            t0 = time.perf_counter()
            x = np.stack([self.clf.prepare(fr.image) for _, fr in part])
            if len(x) < self._min:  # padded with copies; their rows are dropped
                x = np.concatenate([x, np.repeat(x[-1:], self._min - len(x), axis=0)])
            probs = softmax(self.clf.runner.infer(x).astype(np.float32))[:len(part)]
            done = time.perf_counter()
            ms = (done - t0) * 1000.0
            for (s, fr), row in zip(part, probs):
                s.ewma, pred = top_k(row, s.ewma, self.options, self.clf.labels, ms)
                out.append((s, Result(fr.index, fr.captured, done, ms, pred, fr.image if self._keep else None,
                                      fr.name, s.name)))
        return out

    def __iter__(self) -> Iterator[Result]:
        limit = self.options.max_frames
        try:
            while not self._stop.is_set():
                frames = self._round()
                if not frames:
                    if all(s.finished for s in self.sources):
                        break
                    continue
                self.rounds += 1
                for s, r in self._classify(frames):
                    self.results += 1
                    s.results += 1
                    yield r
                    if limit and self.results >= limit:
                        return
        finally:
            self.stop()

    def raise_failures(self) -> None:
        """After the run: the sources that failed, as one error (the others' results are out)."""
        failed = self.failed
        if failed:
            what = "; ".join(f"{s.name}: {s.error}" for s in failed)
            raise src.SourceError(f"{len(failed)} of {len(self.sources)} sources failed ({what}); the others ran "
                                  "to the end")

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        """End after the round in hand (safe from a signal handler or another thread)."""
        self._stop.set()
        self._wake.set()

    def stop(self) -> None:
        self.request_stop()
        for s in self.sources:
            s.stop()
