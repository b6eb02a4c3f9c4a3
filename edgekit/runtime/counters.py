"""Run figures of a stream: frames per second and latency percentiles (``Stats``), per source (``PerSource``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.runtime.streaming import Played, Result


class LatencyHistogram:
    """Counts of values in log-spaced bins (1 % wide, 1 us to 1000 s): percentiles of a run of any
    length in constant memory, within half a bin (0.5 %) of the exact ones."""

    LO, HI, STEP = 1e-3, 1e6, 1.01  # milliseconds

    def __init__(self) -> None:
        self._log_step = float(np.log(self.STEP))
        self.nbins = int(np.ceil(np.log(self.HI / self.LO) / self._log_step)) + 2
        self.counts = np.zeros(self.nbins, np.int64)
        self.n = 0

    def add(self, ms: float) -> None:
        if not ms > self.LO:  # also NaN
            i = 0
        elif ms >= self.HI:
            i = self.nbins - 1
        else:
            i = 1 + int(np.log(ms / self.LO) / self._log_step)
        self.counts[i] += 1
        self.n += 1

    def percentile(self, q: float) -> float:
        if self.n == 0:
            return 0.0
        rank = max(1, int(np.ceil(q / 100.0 * self.n)))
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        if i == 0:
            return self.LO
        if i >= self.nbins - 1:
            return self.HI
        return float(self.LO * self.STEP ** (i - 0.5))  # the bin's geometric middle


class Stats:
    """Frames per second, capture-to-result latency percentiles, inference time.

    Memory and work per frame are constant however long the run: whole-run percentiles come from
    histograms, the live ones (``recent``) from the last ``window`` results in a ring."""

    def __init__(self, window: int = 512) -> None:
        self.count = 0
        self.latency = LatencyHistogram()
        self.infer_hist = LatencyHistogram()
        self._ring = np.zeros(window, np.float64)
        self.t0: float | None = None
        self.t_last = 0.0
        self.last: Result | None = None

    def write(self, r: Result) -> None:
        if self.t0 is None:
            self.t0 = r.done
        self.t_last = r.done
        self._ring[self.count % self._ring.size] = r.latency_ms
        self.count += 1
        self.latency.add(r.latency_ms)
        self.infer_hist.add(r.infer_ms)
        self.last = r

    def close(self) -> None:
        pass

    @property
    def fps(self) -> float:
        if self.t0 is None or self.count < 2 or self.t_last <= self.t0:
            return 0.0
        return (self.count - 1) / (self.t_last - self.t0)

    def recent(self, q: float) -> float:
        """Latency percentile over the last ``window`` results (the live status line)."""
        n = min(self.count, self._ring.size)
        return float(np.percentile(self._ring[:n], q)) if n else 0.0

    def pct(self, q: float, infer: bool = False) -> float:
        """Whole-run percentile of capture-to-result latency (or of inference time)."""
        return (self.infer_hist if infer else self.latency).percentile(q)

    def summary(self, dropped: int, reconnects: int, skipped: int = 0, played: Played | None = None) -> str:
        """The run in one line; where a video file played at its own rate lost frames (``played``: the
        stream's ``played``), a second line says why and how to keep them all."""
        skip = f", {skipped} unreadable files skipped" if skipped else ""
        line = (f"{self.count} frames, {self.fps:.1f} fps, capture-to-result latency p50 "
                f"{self.pct(50):.1f} ms, p90 {self.pct(90):.1f} ms, p99 {self.pct(99):.1f} ms, inference p50 "
                f"{self.pct(50, infer=True):.1f} ms, {dropped} stale frames dropped, {reconnects} reconnects{skip}")
        hint = self.skipped_frames(dropped, played)
        return f"{line}\n{hint}" if hint else line

    def skipped_frames(self, dropped: int, played: Played | None) -> str:
        """'' unless a video file played at its own rate had frames skipped: then how many, why (the model
        against the file's frame rate), and --every-frame. Cameras and streams drop stale frames by design."""
        if played is None or dropped <= 0 or played.fps <= 0:
            return ""
        per_frame = 1000.0 / self.fps if self.fps > 0 else self.pct(50, infer=True)
        every = 1000.0 / played.fps
        why = (f"the model ({per_frame:.0f} ms a frame) is slower than the file plays ({played.fps:g} fps, "
               f"{every:.0f} ms a frame)" if per_frame > every else
               f"the model ({per_frame:.0f} ms a frame) fell behind the file ({played.fps:g} fps) at times, on a "
               "busy machine")
        return f"skipped {dropped} of {max(played.frames, dropped)} frames: {why}; --every-frame classifies them all"


class PerSource:
    """Stats of each source when there are several (the status line and the summary name each)."""

    def __init__(self) -> None:
        self.by: dict[str, Stats] = {}

    def write(self, r: Result) -> None:
        st = self.by.get(r.source)
        if st is None:
            st = self.by[r.source] = Stats()
        st.write(r)

    def close(self) -> None:
        pass

    def summary(self, status: dict[str, dict[str, Any]]) -> list[str]:
        """One line per source: its own figures, drops, reconnects and state."""
        out = []
        for name, s in status.items():
            st = self.by.get(name, Stats())
            out.append(f"{name}: {st.summary(s['dropped'], s['reconnects'])}; {s['state']}")
            played = Played(s["file_frames"], s["file_fps"]) if "file_fps" in s else None
            hint = st.skipped_frames(s["dropped"], played)
            if hint:
                out.append(f"{name}: {hint}")
        return out
