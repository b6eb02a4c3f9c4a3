"""Soak: a long live run with the real sinks, memory and time per frame over its length.

A camera is stood in for by a real uncompressed video file (I420, as a V4L2/CSI camera hands
frames over) read round and round by OpenCV at its own frame rate (the camera's), faster than
the model, so frames are dropped all along. The stream runs with the sinks `edgekit run` uses: the live
status line (written to /dev/null), JSON lines to a file and an annotated video file, all on
the sink thread. Figures, in windows of equal camera time:

- resident memory (RSS) at each window's end: growth from the first window to the last;
- time per result and capture-to-result latency per window: last window / first;
- drops counted exactly: camera frames grabbed == results + drops (+ the one still on offer).

    .venv/bin/python benchmarks/soak.py [--frames 100000] [--fps 500] [--windows 10] [--size 96]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import edgekit  # noqa: E402
from edgekit.cpuinfo import detect  # noqa: E402
from edgekit.images import read_image, sample_images  # noqa: E402
from edgekit.runtime import sinks, sources  # noqa: E402
from edgekit.runtime.sink_thread import SinkThread  # noqa: E402
from edgekit.runtime.streaming import Stream, StreamOptions  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def make_clip(path: Path, fps: float, n: int = 90) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"I420"), fps, (160, 120))
    photos = [cv2.resize(read_image(p), (200, 150)) for p in sample_images()]
    for i in range(n):
        img = photos[(i // 15) % len(photos)]
        w.write(img[15:135, i % 40:i % 40 + 160])
    w.release()
    return path


class Camera(sources.Reader):
    """The file, round and round: a camera that never ends. The stream reads it at the file's
    own frame rate (the clip is written at the camera's), as it reads any file in live mode."""

    grabbed = 0

    def grab(self) -> bool:
        if not super().grab():
            self.close()
            self.open()
            if not super().grab():
                return False
        Camera.grabbed += 1
        return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=100_000, help="camera frames to run for")
    ap.add_argument("--fps", type=float, default=500.0, help="the camera's frame rate")
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--size", type=int, default=96, help="model input size (small: many results per second)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "soak.txt")
    args = ap.parse_args()

    cpu = detect()
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        bundle = tmp / "b"  # exported in a child process: torch stays out of this one's memory
        subprocess.run([sys.executable, "-m", "edgekit", "export", "-m", "googlenet", "-w", "random", "--input-size",
                        str(args.size), "-o", str(bundle)], check=True, capture_output=True)
        clip = make_clip(tmp / "camera.avi", args.fps)
        with edgekit.load(bundle, backend="onnxruntime") as clf:
            st = Stream(str(clip), clf, StreamOptions(topk=5), opener=lambda spec: Camera(spec),
                        keep_frames=True)
            stats = sinks.Stats()
            devnull = open("/dev/null", "w")
            json_f = open(tmp / "results.jsonl", "w")
            video = sinks.VideoOutput(tmp / "annotated.avi", args.fps)
            out = [stats, sinks.TerminalStatus(stats, lambda: st.dropped, devnull.write),
                   sinks.JsonLines(json_f), video]
            writer = SinkThread(out)
            per_window = args.frames / args.windows
            windows: list[dict[str, float]] = []
            t0 = time.perf_counter()
            w_start, w_results, w_lat = t0, 0, []
            for r in st:
                writer.put(r)
                w_results += 1
                w_lat.append(r.latency_ms)
                if Camera.grabbed >= per_window * (len(windows) + 1):
                    now = time.perf_counter()
                    windows.append({"results": w_results, "ms_per_result": (now - w_start) / w_results * 1e3,
                                    "latency_p50": float(np.median(w_lat)), "rss_mib": rss_mib()})
                    w_start, w_results, w_lat = now, 0, []
                    if len(windows) == args.windows:
                        break
            st.stop()
            writer.close()
            json_f.close()
            devnull.close()
            wall = time.perf_counter() - t0
            results = stats.count
            grabbed = Camera.grabbed
            dropped = st.dropped
            json_lines = sum(1 for _ in open(tmp / "results.jsonl"))
            cap = cv2.VideoCapture(str(tmp / "annotated.avi"))
            video_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            cap.release()
            first, last = windows[0], windows[-1]
            say(f"# soak: {grabbed} camera frames at {args.fps:.0f} fps in {wall:.0f} s, googlenet {args.size} px, "
                f"{clf.runner.description}, sinks: status line, JSON lines, annotated video")
            say(f"# CPU: {cpu.describe()}, {os.cpu_count()} cores")
            say(f"{'window':>6} {'results':>8} {'ms/result':>10} {'latency p50':>12} {'RSS MiB':>8}")
            for i, w in enumerate(windows):
                say(f"{i:>6} {w['results']:>8} {w['ms_per_result']:>10.2f} {w['latency_p50']:>12.2f} "
                    f"{w['rss_mib']:>8.1f}")
            pending = grabbed - results - dropped
            say(f"results {results}, dropped {dropped}, grabbed {grabbed}: grabbed - results - dropped = {pending} "
                f"(0 or the one frame on offer; exact: {pending in (0, 1)})")
            say(f"written: {json_lines} JSON lines, {video_frames} video frames (results {results})")
            say(f"RSS growth first->last window: {last['rss_mib'] - first['rss_mib']:+.1f} MiB "
                f"({last['rss_mib'] / first['rss_mib']:.3f}x); time per result last/first: "
                f"{last['ms_per_result'] / first['ms_per_result']:.3f}x; latency p50 last/first: "
                f"{last['latency_p50'] / first['latency_p50']:.3f}x")
            summary = {"camera_frames": grabbed, "fps": args.fps, "results": results, "dropped": dropped,
                       "pending": pending, "json_lines": json_lines, "video_frames": video_frames,
                       "windows": windows, "cpu": cpu.describe()}
            say("json: " + json.dumps(summary))
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
