"""Many cameras, one model, measured in one run on this machine (googlenet, 224 px, ONNX Runtime).

For N = 1, 2, 4, 8 camera-like sources (640x480 I420 clips read round and round at 30 fps, as
a V4L2 camera hands frames over), three ways of running them, in alternating windows so that
the machine's drifting speed falls on all alike:

- batched: one MultiStream, each round's frames in one model call;
- separate: N single-source streams in N threads sharing the one classifier;
- one: a single stream over one source (the reference for N = 1).

Printed per N: results/s of all sources together, batched / separate, per-source latency
(capture to result) percentiles, and frame age against the model's own latency for the batch
it ran (median call time). Goals (issue 15): batched >= 1.5x separate at N = 4 on a GPU and
>= 1.0x on a CPU; frame age <= 1.5x model latency at N = 4.

    .venv/bin/python benchmarks/multistream_speed.py [--window 4] [--rounds 2] [--n 1,2,4,8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_speed import Looping, make_clip  # noqa: E402

import edgekit  # noqa: E402
from edgekit.cpuinfo import detect  # noqa: E402
from edgekit.export.torch_onnx import ExportRequest, export  # noqa: E402
from edgekit.runtime.multistream import MultiStream  # noqa: E402
from edgekit.runtime.streaming import Stream, StreamOptions  # noqa: E402

WARMUP_S = 1.0


class Window:
    def __init__(self) -> None:
        self.results = 0
        self.seconds = 0.0
        self.age: list[float] = []
        self.infer: list[float] = []

    def add(self, other: Window) -> None:
        self.results += other.results
        self.seconds += other.seconds
        self.age += other.age
        self.infer += other.infer

    @property
    def rate(self) -> float:
        return self.results / self.seconds if self.seconds else 0.0


def _collect(it: Any, seconds: float, w: Window, lock: threading.Lock | None = None) -> None:
    """Results of ``it`` after a warm-up, for ``seconds``, into ``w`` (shared between threads
    under ``lock``)."""
    lock = lock or threading.Lock()
    t_start = time.perf_counter()
    t0 = None
    for r in it:
        now = time.perf_counter()
        if t0 is None:
            if now - t_start < WARMUP_S:
                continue
            t0 = now
        with lock:
            w.results += 1
            w.age.append(r.latency_ms)
            w.infer.append(r.infer_ms)
        if now - t0 >= seconds:
            break
    it.stop()
    if t0 is not None:
        with lock:
            w.seconds = max(w.seconds, time.perf_counter() - t0)


def batched(clf: Any, clips: list[Path], seconds: float) -> Window:
    w = Window()
    _collect(MultiStream([str(c) for c in clips], clf, StreamOptions(topk=1), opener=Looping), seconds, w)
    return w


def separate(clf: Any, clips: list[Path], seconds: float) -> Window:
    w = Window()
    lock = threading.Lock()
    streams = [Stream(str(c), clf, StreamOptions(topk=1), opener=Looping) for c in clips]
    threads = [threading.Thread(target=_collect, args=(s, seconds, w, lock)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return w


def _viewer(url: str, stop: threading.Event, got: list[int]) -> None:
    """A browser watching one source's video: reads the Motion-JPEG stream as it comes."""
    import urllib.error
    import urllib.request

    for _ in range(200):  # the source shows up with its first result
        try:
            r = urllib.request.urlopen(url, timeout=10)
            break
        except urllib.error.HTTPError:
            time.sleep(0.05)
    with r:
        while not stop.is_set():
            chunk = r.read(65536)
            if not chunk:
                return
            got[0] += len(chunk)


class _Tee:
    """A stream whose results also go to the sinks, as in `edgekit run`."""

    def __init__(self, ms: MultiStream, writer: Any) -> None:
        self.ms, self.writer = ms, writer

    def __iter__(self) -> Any:
        for r in self.ms:
            self.writer.put(r)
            yield r

    def stop(self) -> None:
        self.ms.stop()


def with_view(clf: Any, clips: list[Path], seconds: float, rounds: int) -> None:
    """The batched stream writing to a live view (as `edgekit run --serve`), in alternating windows
    without and with one viewer connected: what serving costs the inference path."""
    from edgekit.runtime.serve import LiveView
    from edgekit.runtime.sink_thread import SinkThread

    rates: dict[bool, list[float]] = {False: [], True: []}
    encoded = 0
    for k in range(2 * rounds):
        watched = k % 2 == 1
        ms = MultiStream([str(c) for c in clips], clf, StreamOptions(topk=1), opener=Looping, keep_frames=True)
        view = LiveView("127.0.0.1", 0, model="googlenet", backend="onnxruntime fp32", sources=ms.status)
        writer = SinkThread([view])
        stop, got = threading.Event(), [0]
        viewer = threading.Thread(target=_viewer, args=(view.url + "video/0.mjpg", stop, got), daemon=True)
        if watched:
            viewer.start()
        w = Window()
        _collect(_Tee(ms, writer), seconds, w)
        stop.set()
        writer.close()
        encoded += view.encoded if watched else 0
        rates[watched].append(w.rate)
    without, watched_rate = statistics.mean(rates[False]), statistics.mean(rates[True])
    print(f"live view (N = 2 sources at 120 fps, batched): {without:.1f} results/s with no viewer, "
          f"{watched_rate:.1f} with one watching "
          f"= {watched_rate / without:.3f}x ({encoded} JPEGs sent to the viewer)")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=4.0, help="seconds per window")
    ap.add_argument("--rounds", type=int, default=2, help="windows of each mode per N, alternating")
    ap.add_argument("--n", default="1,2,4,8", help="numbers of sources")
    ap.add_argument("--fps", type=int, default=30, help="each source's frame rate")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekit-multi-bench-"))
    b = export(ExportRequest("googlenet", work / "gn", weights="random", parity_random=2)).bundle
    clf = edgekit.load(b, precision="fp32")
    n_max = max(int(n) for n in args.n.split(","))
    clips = [make_clip(work / f"cam{i}.avi", "camera", args.fps, 90 + 7 * i) for i in range(n_max)]
    print(f"googlenet 224 px fp32, {clf.runner.description}; CPU: {detect().describe()}")
    print(f"{args.fps} fps 640x480 camera-like sources; {args.rounds} alternating windows of {args.window:g} s "
          "per mode and N")
    print("| N | batched results/s | separate results/s | batched / separate | batched age p50 / p90 / p99 ms "
          "| separate age p50 / p90 / p99 ms | batched age / its model latency |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(x) for x in args.n.split(",")):
        bw, sw = Window(), Window()
        for _ in range(args.rounds):
            bw.add(batched(clf, clips[:n], args.window))
            sw.add(separate(clf, clips[:n], args.window))
        model_ms = statistics.median(bw.infer)
        print(f"| {n} | {bw.rate:.1f} | {sw.rate:.1f} | {bw.rate / sw.rate:.2f}x | "
              f"{pct(bw.age, 50):.1f} / {pct(bw.age, 90):.1f} / {pct(bw.age, 99):.1f} | "
              f"{pct(sw.age, 50):.1f} / {pct(sw.age, 90):.1f} / {pct(sw.age, 99):.1f} | "
              f"{pct(bw.age, 50) / model_ms:.2f}x ({model_ms:.1f} ms a call) |", flush=True)
    fast = [make_clip(work / f"fast{i}.avi", "camera", 120, 90 + 7 * i) for i in range(2)]
    with_view(clf, fast, args.window, args.rounds + 1)
    one = Window()
    for _ in range(args.rounds):
        w = Window()
        _collect(Stream(str(clips[0]), clf, StreamOptions(topk=1), opener=Looping), args.window, w)
        one.add(w)
    print(f"one stream, one source: {one.rate:.1f} results/s, age p50 {pct(one.age, 50):.1f} ms")


if __name__ == "__main__":
    main()
