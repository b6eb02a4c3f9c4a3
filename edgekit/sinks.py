"""Where stream results go: terminal status, JSON lines, annotated video, a window, a callback."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgekit.deps import require
from edgekit.errors import UsageError
from edgekit.stream import Result


class Stats:
    """Frames per second, capture-to-result latency percentiles, inference time."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.infer: list[float] = []
        self.t0: float | None = None
        self.t_last = 0.0
        self.last: Result | None = None

    def write(self, r: Result) -> None:
        if self.t0 is None:
            self.t0 = r.done
        self.t_last = r.done
        self.latencies.append(r.latency_ms)
        self.infer.append(r.infer_ms)
        self.last = r

    def close(self) -> None:
        pass

    @property
    def fps(self) -> float:
        if self.t0 is None or len(self.latencies) < 2 or self.t_last <= self.t0:
            return 0.0
        return (len(self.latencies) - 1) / (self.t_last - self.t0)

    def pct(self, q: float, values: list[float] | None = None) -> float:
        v = self.latencies if values is None else values
        return float(np.percentile(v, q)) if v else 0.0

    def summary(self, dropped: int, reconnects: int) -> str:
        return (f"{len(self.latencies)} frames, {self.fps:.1f} fps, capture-to-result latency p50 "
                f"{self.pct(50):.1f} ms, p90 {self.pct(90):.1f} ms, p99 {self.pct(99):.1f} ms, inference p50 "
                f"{self.pct(50, self.infer):.1f} ms, {dropped} stale frames dropped, {reconnects} reconnects")


class TerminalStatus:
    """One live status line on stderr, refreshed a few times a second."""

    def __init__(self, stats: Stats, dropped: Callable[[], int], out: Callable[[str], None]) -> None:
        self.stats, self.dropped, self.out = stats, dropped, out
        self.last = 0.0

    def write(self, r: Result) -> None:
        now = time.perf_counter()
        if now - self.last < 0.25:
            return
        self.last = now
        s = self.stats
        self.out(f"\r{s.fps:5.1f} fps  latency p50 {s.pct(50):6.1f} ms  p90 {s.pct(90):6.1f} ms  "
                 f"drops {self.dropped():5d}  {r.prediction.label[:30]:<30} {r.prediction.score:5.1%}")

    def close(self) -> None:
        self.out("\n")


class JsonLines:
    def __init__(self, stream: IO[str], threshold: float = 0.0, t_ref: float | None = None) -> None:
        self.f = stream
        self.threshold = threshold
        # capture times are reported as wall-clock seconds
        self.offset = time.time() - time.perf_counter() if t_ref is None else t_ref

    def write(self, r: Result) -> None:
        p = r.prediction
        top = [{"label": lb, "index": i, "score": round(s, 5)} for lb, i, s in zip(p.labels, p.indices, p.scores)]
        rec = {"frame": r.frame_index, "capture_time": round(r.captured + self.offset, 6),
               "latency_ms": round(r.latency_ms, 2), "infer_ms": round(r.infer_ms, 2),
               "label": p.label if p.score >= self.threshold else None, "top": top}
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.flush()


def annotate(frame: np.ndarray, r: Result) -> np.ndarray:
    cv2 = require("cv2", "drawing annotations")
    img = frame.copy()
    p = r.prediction
    lines = [f"{s:5.1%} {lb}" for lb, s in zip(p.labels[:3], p.scores[:3])]
    lines.append(f"{r.latency_ms:.0f} ms")
    for i, text in enumerate(lines):
        y = 24 + 22 * i
        cv2.putText(img, text, (9, y + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return img


class VideoOutput:
    """Annotated video, written to a temporary file and renamed at close (never left truncated)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.cv2 = require("cv2", "writing video")
        self.path = Path(path)
        if not self.path.parent.exists():
            raise UsageError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}{self.path.suffix}")
        self.fps = fps or 30.0
        self.writer: Any = None

    def write(self, r: Result) -> None:
        if r.frame is None:
            return
        img = annotate(r.frame, r)
        if self.writer is None:
            fourcc = self.cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"))
            self.writer = self.cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (img.shape[1], img.shape[0]))
            if not self.writer.isOpened():
                raise UsageError(f"cannot write video {self.path}: no encoder for {self.path.suffix}; use .avi or .mp4")
        self.writer.write(img)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
        self.tmp.unlink(missing_ok=True)


class Window:
    def __init__(self, title: str = "edgekit") -> None:
        self.cv2 = require("cv2", "showing a window")
        self.title = title

    def write(self, r: Result) -> None:
        if r.frame is not None:
            self.cv2.imshow(self.title, annotate(r.frame, r))
            self.cv2.waitKey(1)

    def close(self) -> None:
        self.cv2.destroyAllWindows()


class Callback:
    def __init__(self, fn: Callable[[Result], None]) -> None:
        self.fn = fn

    def write(self, r: Result) -> None:
        self.fn(r)

    def close(self) -> None:
        pass
