"""Classify a stream: capture (newest frame only), inference and output run in their own
threads, so the stream runs at the model's own speed and never processes stale frames."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit import sources as src
from edgekit.classifier import Classifier, Prediction, softmax
from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class StreamOptions:
    topk: int = 5
    threshold: float = 0.0  # below it the result is "uncertain" (label None in JSON)
    smooth: float | None = None  # EWMA weight of the past (0..1) on class probabilities
    every_frame: bool = False  # files: classify every frame in order instead of live pacing
    pace: bool = True  # files in live mode are read at their own frame rate, like a camera
    width: int = 1280
    height: int = 720
    fps: int = 30
    sensor_mode: int | None = None  # a CSI sensor's mode (the device profile's camera settings)
    reconnect: src.Reconnect = field(default_factory=src.Reconnect)
    max_frames: int | None = None


@dataclass(frozen=True)
class Result:
    frame_index: int
    captured: float  # perf_counter at capture
    done: float  # perf_counter when the result was ready
    infer_ms: float
    prediction: Prediction
    frame: np.ndarray | None = None  # for sinks that draw on it

    @property
    def latency_ms(self) -> float:
        """Capture to result."""
        return (self.done - self.captured) * 1000.0


def camera_settings(width: int | None = None, height: int | None = None, fps: int | None = None,
                    sensor_mode: int | None = None) -> tuple[int, int, int, int | None]:
    """Camera size, rate and sensor mode: what the user gave, else this device profile's camera
    (a Nano's sensor mode 5 at 1280x720@30, an Orin NX's mode 4 at 60 fps), else 1280x720@30."""
    from edgekit import profiles as prof_mod

    try:
        cam = prof_mod.detect()[0].camera
    except EdgekitError:  # a broken user profile: the defaults, and the run goes on
        cam = prof_mod.Camera(1280, 720, 30)
    return (width or cam.width, height or cam.height, fps or cam.fps,
            sensor_mode if sensor_mode is not None else cam.sensor_mode)


class Stream:
    """Iterate to get results; stop() (or leaving the loop) ends capture cleanly."""

    def __init__(self, source: str | int, clf: Classifier, options: StreamOptions | None = None,
                 on_event: Callable[[str], None] | None = None, keep_frames: bool = False,
                 opener: Callable[[src.SourceSpec], src.Reader] | None = None) -> None:
        self.options = options or StreamOptions()
        self.clf = clf
        self.spec = src.parse(source, self.options.width, self.options.height, self.options.fps,
                              self.options.sensor_mode)
        self.name = self.spec.display_name
        self._say = on_event or (lambda _: None)
        self._keep = keep_frames
        self._stop = threading.Event()
        self._ewma: np.ndarray | None = None
        self.results = 0
        self.fps = 0.0  # the source's own frame rate, where it says
        self._capture: src.LatestFrame | None = None
        self._reader: src.Reader | None = None
        o = self.options
        if o.every_frame:
            if self.spec.live:
                raise src.SourceError(f"--every-frame reads files in order; {self.name} is a live source")
            self._reader = src.Reader(self.spec, o.width, o.height, o.fps)
            self.fps = self._reader.fps
        else:
            def open_reader() -> src.Reader:
                if opener is not None:
                    return opener(self.spec)
                return src.Reader(self.spec, o.width, o.height, o.fps)

            first = open_reader()  # opened once, and handed to the capture thread as it is
            self.fps = first.fps
            pace = first.fps if (not self.spec.live and o.pace and first.fps > 0) else None
            live = self.spec.live or opener is not None
            self._capture = src.LatestFrame(open_reader, live, pace, o.reconnect, self._say, first=first)

    @property
    def dropped(self) -> int:
        return self._capture.dropped if self._capture else 0

    @property
    def reconnects(self) -> int:
        return self._capture.reconnects if self._capture else 0

    def _frames(self) -> Iterator[src.Frame]:
        if self._reader is not None:
            for fr in src.every_frame(self._reader):
                if self._stop.is_set():
                    return
                yield fr
            return
        assert self._capture is not None
        while not self._stop.is_set():
            latest = self._capture.next(timeout=0.5)
            if latest is None:
                if self._capture.finished:
                    return
                continue
            yield latest

    def _predict(self, frame: src.Frame) -> Result:
        t0 = time.perf_counter()
        x = self.clf.prepare(frame.image)[None]
        logits = self.clf.runner.infer(x)
        probs = softmax(logits.astype(np.float32))[0]
        infer_ms = (time.perf_counter() - t0) * 1000.0
        o = self.options
        if o.smooth:
            self._ewma = probs if self._ewma is None else o.smooth * self._ewma + (1 - o.smooth) * probs
            probs = self._ewma
        k = max(1, min(o.topk, probs.shape[0]))
        idx = np.argsort(-probs)[:k]
        pred = Prediction(tuple(self.clf.labels[i] for i in idx), tuple(int(i) for i in idx),
                          tuple(float(probs[i]) for i in idx), infer_ms)
        return Result(frame.index, frame.captured, time.perf_counter(), infer_ms, pred,
                      frame.image if self._keep else None)

    def __iter__(self) -> Iterator[Result]:
        try:
            for fr in self._frames():
                res = self._predict(fr)
                self.results += 1
                yield res
                if self.options.max_frames and self.results >= self.options.max_frames:
                    break
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._capture is not None:
            self._capture.stop()
        if self._reader is not None:
            self._reader.close()


class SinkThread:
    """Runs the output sinks off the inference thread; results queue up only here."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = sinks
        self.q: queue.Queue[Result | None] = queue.Queue(maxsize=64)
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._run, name="edgekit-sinks", daemon=True)
        self.t.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            try:
                for s in self.sinks:
                    s.write(item)
            except BaseException as exc:
                self.error = exc
                return

    def put(self, r: Result) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(r)

    def close(self) -> None:
        self.q.put(None)
        self.t.join()
        for s in self.sinks:
            s.close()
        if self.error is not None:
            raise self.error
