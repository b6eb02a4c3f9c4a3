"""Classify a stream: capture (newest frame only), inference and output run in their own
threads, so the stream runs at the model's own speed and never processes stale frames."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runtime import sources as src
from edgekit.runtime.classifier import Classifier, Prediction, softmax
from edgekit.runtime.latest import LatestFrame


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
class Played:
    """A video file played at its own frame rate, as a camera would give it (not --every-frame): frames
    the model is too slow for are skipped, and the summary says so."""

    frames: int  # frames the file played
    fps: float  # its frame rate


@dataclass(frozen=True)
class Result:
    frame_index: int
    captured: float  # perf_counter at capture
    done: float  # perf_counter when the result was ready
    infer_ms: float
    prediction: Prediction
    frame: np.ndarray | None = None  # for sinks that draw on it
    name: str | None = None  # the image file (folders and globs)
    source: str = ""  # the source's display name (credentials masked); frame_index counts within it

    @property
    def latency_ms(self) -> float:
        """Capture to result."""
        return (self.done - self.captured) * 1000.0


def camera_settings(width: int | None = None, height: int | None = None, fps: int | None = None,
                    sensor_mode: int | None = None) -> tuple[int, int, int, int | None]:
    """Camera size, rate and sensor mode: what the user gave, else this device profile's camera
    (size and rate; a sensor mode only when the user gives one: modes belong to the camera module,
    an IMX219's differ from an IMX477's), else 1280x720@30."""
    from edgekit import profiles as prof_mod

    try:
        cam = prof_mod.detect()[0].camera
    except EdgekitError:  # a broken user profile: the defaults, and the run goes on
        cam = prof_mod.Camera(1280, 720, 30)
    return (width or cam.width, height or cam.height, fps or cam.fps,
            sensor_mode if sensor_mode is not None else cam.sensor_mode)


def top_k(probs: np.ndarray, ewma: np.ndarray | None, o: StreamOptions, labels: Any,
          infer_ms: float) -> tuple[np.ndarray | None, Prediction]:
    """One frame's prediction from its class probabilities, smoothed over the source's past
    frames when asked (returns the new running mean, per source)."""
    if o.smooth:
        ewma = probs if ewma is None else o.smooth * ewma + (1 - o.smooth) * probs
        probs = ewma
    k = max(1, min(o.topk, probs.shape[0]))
    idx = np.argsort(-probs)[:k]
    return ewma, Prediction(tuple(labels[i] for i in idx), tuple(int(i) for i in idx),
                            tuple(float(probs[i]) for i in idx), infer_ms)


class _Opened:
    """One source, opened once: a capture thread keeping its newest frame (cameras, streams, files
    paced like a camera), or a reader taking every frame in order (folders, --every-frame)."""

    def __init__(self, spec: src.SourceSpec, o: StreamOptions, say: Callable[[str], None],
                 opener: Callable[[src.SourceSpec], src.Reader] | None,
                 on_frame: Callable[[], None] | None = None) -> None:
        def on_skip(path: Any, why: str) -> None:
            say(f"skipped: {why}")

        def open_reader() -> src.Reader:
            if opener is not None:
                return opener(spec)
            return src.Reader(spec, o.width, o.height, o.fps, on_skip=on_skip)

        if o.every_frame and spec.live:
            raise src.SourceInputError(f"--every-frame reads files in order; {spec.display_name} is a live "
                                       "source: drop --every-frame")
        first = open_reader()  # opened once, and handed on as it is (Argus fails quick CSI reopens)
        self.fps = first.fps
        self.kind = spec.kind
        self.capture: LatestFrame | None = None
        self.reader: src.Reader | None = None
        live = spec.live or opener is not None
        paced = o.pace and first.fps > 0
        if o.every_frame or (not live and (spec.kind == "images" or not paced)):
            # A folder, a glob or a video with no frame rate has no pace to keep up with: every
            # image is classified in order (live mode would grab them all before the first ask).
            if not o.every_frame and spec.kind != "images":
                say(f"{spec.display_name} states no frame rate: every frame is classified in order")
            self.reader = first
        else:
            pace = first.fps if (not spec.live and paced) else None
            self.capture = LatestFrame(open_reader, live, pace, o.reconnect, say, first=first,
                                           on_frame=on_frame)

    @property
    def played(self) -> Played | None:
        """A video file played at its own rate: how many frames, at what rate; None for cameras, streams,
        folders and files read frame by frame (they skip nothing for a slow model, or have no pace)."""
        if self.kind != "file" or self.capture is None or self.fps <= 0:
            return None
        return Played(self.capture.grabbed, self.fps)


def played_status(played: Played | None) -> dict[str, Any]:
    """A file's pace in a source's status (plain numbers: the status is served as JSON too)."""
    return {} if played is None else {"file_frames": played.frames, "file_fps": played.fps}


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
        self._iterating = False
        self.results = 0
        opened = _Opened(self.spec, self.options, self._say, opener)
        self.fps = opened.fps  # the source's own frame rate, where it says
        self.kind = self.spec.kind  # v4l2, csi, rtsp, file, images
        self._opened = opened
        self._capture = opened.capture
        self._reader = opened.reader

    @property
    def played(self) -> Played | None:
        """Where the source is a video file played at its own rate (frames skipped when the model is slower):
        the frames it played and its rate, for the summary (``Stats.summary(..., played=st.played)``)."""
        return self._opened.played

    @property
    def skipped(self) -> list[tuple[Any, str]]:
        """Image files that could not be read and were skipped (path, why)."""
        return list(self._reader.skipped) if self._reader is not None else []

    @property
    def dropped(self) -> int:
        return self._capture.dropped if self._capture else 0

    @property
    def reconnects(self) -> int:
        return self._capture.reconnects if self._capture else 0

    def status(self) -> dict[str, dict[str, Any]]:
        """Dropped, reconnects and state (live, reconnecting, lost, ended), as MultiStream gives it."""
        if self._capture is not None:
            state = self._capture.state
        else:
            state = "ended" if self._stop.is_set() else "live"
        return {self.name: {"dropped": self.dropped, "reconnects": self.reconnects, "state": state,
                            "results": self.results, **played_status(self.played)}}

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
        self._ewma, pred = top_k(probs, self._ewma, self.options, self.clf.labels, infer_ms)
        return Result(frame.index, frame.captured, time.perf_counter(), infer_ms, pred,
                      frame.image if self._keep else None, frame.name, self.name)

    def __iter__(self) -> Iterator[Result]:
        self._iterating = True
        try:
            for fr in self._frames():
                res = self._predict(fr)
                self.results += 1
                yield res
                if self.options.max_frames and self.results >= self.options.max_frames:
                    break
        finally:
            self._iterating = False
            self.stop()

    @property
    def stopping(self) -> bool:
        """A stop was asked for (request_stop/stop) or the stream has ended."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Ask the loop to end after the frame in hand (safe from a signal handler or another
        thread: it closes nothing under the reader; the loop does that on its way out)."""
        self._stop.set()

    def stop(self) -> None:
        """End the stream. From another thread while it is iterated, the loop ends after the frame
        in hand and closes the source itself (nothing is closed under a read in progress)."""
        self._stop.set()
        if self._capture is not None:
            self._capture.stop()
        if self._reader is not None and not self._iterating:
            self._reader.close()
