"""The runtime, measured in one run with ONNX Runtime on this machine (inception_v3):

- stream throughput against the runner's own throughput (a 640x480 source faster than the model);
- median frame age (capture to result) against the model's latency;
- resident memory over 10,000 frames (sampled every 1,000);
- `import edgekit` + load + first result against ONNX Runtime's own session start + first run.

    .venv/bin/python benchmarks/stream_speed.py [--frames 10000] [--precision int8-cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import edgekit  # noqa: E402
from edgekit import sources  # noqa: E402
from edgekit.calibrate import CalibrateRequest, calibrate_bundle  # noqa: E402
from edgekit.export import ExportRequest, export  # noqa: E402
from edgekit.images import read_image, sample_images  # noqa: E402
from edgekit.stream import Stream, StreamOptions  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_clip(path: Path, n: int = 300) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 300, (640, 480))
    photos = [cv2.resize(read_image(p), (720, 540)) for p in sample_images()]
    for i in range(n):
        img = photos[(i // 60) % len(photos)]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--precision", default="int8-cpu")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: the profile's)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekit-stream-bench-"))
    b = export(ExportRequest("inception_v3", work / "v3", weights="random", parity_random=2)).bundle
    if args.precision.startswith("int8") or args.precision == "fp16":
        calibrate_bundle(CalibrateRequest(b, None, min_agreement=0.0))
    clip = make_clip(work / "clip.avi")

    clf = edgekit.load(b, precision=args.precision, threads=args.threads)
    frame = cv2.resize(read_image(sample_images()[0]), (640, 480))
    x = clf.prepare(frame)[None]
    for _ in range(5):
        clf.runner.infer(x)
    n = 100
    t0 = time.perf_counter()
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        clf.runner.infer(x)
        lat.append(time.perf_counter() - t)
    runner_fps = n / (time.perf_counter() - t0)
    model_ms = statistics.median(lat) * 1000

    # stream: the clip read at 300 fps (faster than the model), newest frame only
    st = Stream(str(clip), clf, StreamOptions(topk=1), opener=Looping)
    ages, rss, count = [], [], 0
    t_window = None
    for r in st:
        count += 1
        ages.append(r.latency_ms)
        if count == 20:
            t_window = (time.perf_counter(), count)
        if count % 1000 == 0:
            rss.append(rss_mib())
        if count >= args.frames:
            break
    elapsed = time.perf_counter() - t_window[0] if t_window else 0.0
    stream_fps = (count - t_window[1]) / elapsed if elapsed else 0.0
    dropped = st.dropped

    # start-up: edgekit vs ONNX Runtime alone, fresh processes
    img = str(sample_images()[0])
    onnx_path = b / ("model.int8-cpu.onnx" if args.precision == "int8-cpu" else "model.onnx")
    ek = (f"import time; t=time.perf_counter(); import edgekit; from edgekit.images import read_image; "
          f"c=edgekit.load({str(b)!r}, precision={args.precision!r}); c.classify(read_image({img!r})); "
          "print(time.perf_counter()-t)")
    ort = (f"import time; t=time.perf_counter(); import numpy as np, onnxruntime as ort; "
           f"s=ort.InferenceSession({str(onnx_path)!r}, providers=['CPUExecutionProvider']); "
           f"s.run(None, {{'image': np.zeros((1,299,299,3), np.uint8)}}); print(time.perf_counter()-t)")

    def best(code: str) -> float:
        return min(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                        check=True).stdout) for _ in range(3))

    t_ek, t_ort = best(ek), best(ort)

    print(f"inception_v3 ({args.precision}), ONNX Runtime {clf.runner.description}; source 640x480 at 300 fps")
    print(f"  runner alone:      {runner_fps:6.1f} inferences/s, median latency {model_ms:.1f} ms")
    print(f"  stream:            {stream_fps:6.1f} results/s  = {stream_fps / runner_fps:.3f}x the runner "
          "(target >= 0.95)")
    print(f"  frame age (capture to result): median {statistics.median(ages):.1f} ms = "
          f"{statistics.median(ages) / model_ms:.2f}x the model latency (target <= 1.5), "
          f"p99 {np.percentile(ages, 99):.1f} ms; {dropped} stale frames dropped")
    print(f"  resident memory every 1,000 frames over {count} frames (MiB): "
          + ", ".join(f"{m:.0f}" for m in rss)
          + (f"; growth {rss[-1] - rss[0]:+.1f} MiB from the first sample" if len(rss) > 1 else ""))
    print(f"  import edgekit + load + first result: {t_ek:.2f} s; ONNX Runtime session + first run: {t_ort:.2f} s "
          f"= {t_ek / t_ort:.2f}x (target <= 1.5)")


if __name__ == "__main__":
    main()
