"""The runtime, measured in one run with ONNX Runtime on this machine (inception_v3):

- stream throughput against the runner's own throughput, for a 640x480 source faster than
  the model, in alternating windows (runner, stream, runner, ...) so that the machine's
  drifting speed falls on both alike;
- median frame age (capture to result) against the model's latency;
- resident memory over 10,000 frames (sampled every 1,000);
- `import edgekit` + load + first result against ONNX Runtime's own session start + first run.

Sources, read round and round at their own frame rate like a camera:

- camera at 60, 120 and 300 fps: uncompressed I420 frames, as a V4L2/CSI camera hands them
  over. Grabbing one reads it; converting it to BGR happens only for frames the model takes
  (as OpenCV's V4L2 backend converts or decodes in retrieve()). Every frame still costs the
  capture thread a wake-up and a read, so the rate matters on a machine whose cores the model
  already fills.
- mjpeg at 300 fps: a Motion-JPEG file. OpenCV's FFmpeg backend decodes every frame inside
  grab(), so each one costs a full JPEG decode whether the model takes it or not.

    .venv/bin/python benchmarks/stream_speed.py [--frames 10000] [--rounds 6] [--window 3]
                                                [--fps 60,120,300] [--precision int8-cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import edgekit  # noqa: E402
from edgekit.export.torch_onnx import ExportRequest, export  # noqa: E402
from edgekit.images import read_image, sample_images  # noqa: E402
from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle  # noqa: E402
from edgekit.runtime import sources, timing  # noqa: E402
from edgekit.runtime.streaming import Stream, StreamOptions  # noqa: E402

CODECS = {"camera": "I420", "mjpeg": "MJPG"}


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_clip(path: Path, kind: str = "camera", fps: int = 60, n: int = 120) -> Path:
    """640x480 from the sample photographs, panning a little every frame."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*CODECS[kind]), fps, (640, 480))
    photos = [cv2.resize(read_image(p), (720, 540)) for p in sample_images()]
    for i in range(n):
        img = photos[(i // 30) % len(photos)]
        x = i % 60
        w.write(img[30:510, x:x + 640])
    w.release()
    return path


class Looping(sources.Reader):
    """A file read round and round: a camera that never ends (benchmark only)."""

    def grab(self):
        if super().grab():
            return True
        self.close()
        self.open()
        return super().grab()


@dataclass
class Throughput:
    runner_fps: float  # all runner windows pooled
    stream_fps: float  # all stream windows pooled
    per_round: list[float]  # stream / adjacent runner windows, each round
    runner_ms: float  # median runner latency
    stream_infer_ms: float  # median prepare + inference inside the stream
    age_ms: float  # median capture-to-result

    @property
    def ratio(self) -> float:
        return self.stream_fps / self.runner_fps


def _runner_window(clf: Any, x: np.ndarray, seconds: float, lat: list[float]) -> tuple[int, float]:
    n, t0 = len(lat), time.perf_counter()
    lat += timing.measure(lambda: clf.runner.infer(x), timing.Settings(0, 1, seconds, max_runs=10**9))
    return len(lat) - n, time.perf_counter() - t0


def _stream_window(clf: Any, clip: Path, seconds: float, ages: list[float], infer: list[float],
                   warmup: int = 10) -> tuple[int, float]:
    st = Stream(str(clip), clf, StreamOptions(topk=1), opener=Looping)
    n, t0 = 0, 0.0
    try:
        for i, r in enumerate(st):
            if i == warmup:
                t0 = time.perf_counter()
            if i < warmup:
                continue
            n += 1
            ages.append(r.latency_ms)
            infer.append(r.infer_ms)
            if time.perf_counter() - t0 >= seconds:
                break
    finally:
        st.stop()
    return n, time.perf_counter() - t0


def stream_vs_runner(clf: Any, clip: Path, rounds: int = 8, seconds: float = 3.0) -> Throughput:
    """Alternate runner and stream windows: runner, stream, runner, stream, ..., runner."""
    frame = cv2.resize(read_image(sample_images()[0]), (640, 480))
    x = clf.prepare(frame)[None]
    for _ in range(5):
        clf.runner.infer(x)
    lat: list[float] = []
    ages: list[float] = []
    infer: list[float] = []
    runs = [_runner_window(clf, x, seconds, lat)]
    streams, per_round = [], []
    for _ in range(rounds):
        streams.append(_stream_window(clf, clip, seconds, ages, infer))
        runs.append(_runner_window(clf, x, seconds, lat))
        around = (runs[-2][0] + runs[-1][0]) / (runs[-2][1] + runs[-1][1])
        per_round.append(streams[-1][0] / streams[-1][1] / around)
    runner_fps = sum(n for n, _ in runs) / sum(t for _, t in runs)
    stream_fps = sum(n for n, _ in streams) / sum(t for _, t in streams)
    return Throughput(runner_fps, stream_fps, per_round, statistics.median(lat) * 1000,
                      statistics.median(infer), statistics.median(ages))


def long_run(clf: Any, clip: Path, frames: int) -> tuple[float, float, float, int, list[float]]:
    """One stream of `frames` results: results/s, median and p99 frame age, drops, RSS every 1,000."""
    st = Stream(str(clip), clf, StreamOptions(topk=1), opener=Looping)
    ages: list[float] = []
    rss: list[float] = []
    t0 = time.perf_counter()
    try:
        for r in st:
            ages.append(r.latency_ms)
            if len(ages) % 1000 == 0:
                rss.append(rss_mib())
            if len(ages) >= frames:
                break
    finally:
        st.stop()
    fps = len(ages) / (time.perf_counter() - t0)
    return fps, statistics.median(ages), float(np.percentile(ages, 99)), st.dropped, rss


def startup(b: Path, precision: str) -> tuple[float, float]:
    """Best of 3 fresh processes: edgekit import + load + first result, and ONNX Runtime alone."""
    img = str(sample_images()[0])
    onnx_path = b / ("model.int8-cpu.onnx" if precision == "int8-cpu" else "model.onnx")
    ek = (f"import time; t=time.perf_counter(); import edgekit; from edgekit.images import read_image; "
          f"c=edgekit.load({str(b)!r}, precision={precision!r}); c.classify(read_image({img!r})); "
          "print(time.perf_counter()-t)")
    ort = (f"import time; t=time.perf_counter(); import numpy as np, onnxruntime as ort; "
           f"s=ort.InferenceSession({str(onnx_path)!r}, providers=['CPUExecutionProvider']); "
           f"s.run(None, {{'image': np.zeros((1,299,299,3), np.uint8)}}); print(time.perf_counter()-t)")

    def best(code: str) -> float:
        return min(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                        check=True).stdout) for _ in range(3))

    return best(ek), best(ort)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10000, help="results in the memory run")
    ap.add_argument("--rounds", type=int, default=6, help="stream windows, each between two runner windows")
    ap.add_argument("--window", type=float, default=3.0, help="seconds per window")
    ap.add_argument("--fps", default="60,120,300", help="camera-like source rates to measure")
    ap.add_argument("--precision", default="int8-cpu")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: the profile's)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekit-stream-bench-"))
    b = export(ExportRequest("inception_v3", work / "v3", weights="random", parity_random=2)).bundle
    if args.precision.startswith("int8") or args.precision == "fp16":
        calibrate_bundle(CalibrateRequest(b, None, min_agreement=0.0))
    clf = edgekit.load(b, precision=args.precision, threads=args.threads)
    print(f"inception_v3 ({args.precision}), ONNX Runtime {clf.runner.description}; 640x480 sources; "
          f"{args.rounds} stream windows of {args.window:g} s, each between two runner windows")
    sources_ = [("camera", int(f)) for f in args.fps.split(",")] + [("mjpeg", 300)]
    for kind, fps in sources_:
        t = stream_vs_runner(clf, make_clip(work / f"{kind}{fps}.avi", kind, fps), args.rounds, args.window)
        met = "met" if t.ratio >= 0.95 else "missed"
        print(f"  {kind} {fps:3d} fps: stream {t.stream_fps:5.1f} results/s, runner {t.runner_fps:5.1f}/s = "
              f"{t.ratio:.3f}x (>= 0.95: {met}); windows {min(t.per_round):.2f}-{max(t.per_round):.2f}x, "
              f"median {statistics.median(t.per_round):.3f}x")
        print(f"      frame age median {t.age_ms:.1f} ms = {t.age_ms / t.runner_ms:.2f}x the model latency "
              f"{t.runner_ms:.1f} ms (<= 1.5: {'met' if t.age_ms <= 1.5 * t.runner_ms else 'missed'}); "
              f"prepare + inference inside the stream {t.stream_infer_ms:.1f} ms")

    first = sources_[0]
    fps, age, p99, dropped, rss = long_run(clf, work / f"{first[0]}{first[1]}.avi", args.frames)
    print(f"  {args.frames} frames, {first[0]} {first[1]} fps: {fps:.1f} results/s, frame age median {age:.1f} ms "
          f"p99 {p99:.1f} ms, {dropped} frames dropped unseen")
    print("  resident memory every 1,000 frames (MiB): " + ", ".join(f"{m:.0f}" for m in rss)
          + (f"; growth {rss[-1] - rss[0]:+.1f} MiB from the first sample" if len(rss) > 1 else ""))
    t_ek, t_ort = startup(b, args.precision)
    print(f"  import edgekit + load + first result: {t_ek:.2f} s; ONNX Runtime session + first run: {t_ort:.2f} s "
          f"= {t_ek / t_ort:.2f}x (target <= 1.5)")


if __name__ == "__main__":
    main()
