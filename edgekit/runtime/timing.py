"""How edgekit times a model, the same way everywhere (`edgekit bench`, the suite, the CPU-path
measurement): real photographs prepared as the runtime prepares frames, warm-up, then calls until
both a minimum count and a minimum duration; median and percentiles, peak resident memory."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import manifest as mf
from edgekit.callbacks import Log


@dataclass(frozen=True)
class Settings:
    warmup: int = 3
    min_runs: int = 10
    min_seconds: float = 2.0
    max_runs: int = 2000


@dataclass(frozen=True)
class Row:
    model: str
    backend: str  # "onnxruntime", "tensorrt", "torch", "openvino", ...
    precision: str
    batch: int
    device: str  # "cpu" or the GPU's name
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    runs: int
    throughput: float  # images per second
    device_p50_ms: float | None = None  # CUDA events
    host_peak_mib: float | None = None
    gpu_mib: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


# ------------------------------------------------------------------ measuring


def measure(fn: Callable[[], Any], s: Settings = Settings()) -> list[float]:
    """Seconds per call of ``fn``: after ``warmup`` calls, at least ``min_runs`` and ``min_seconds``."""
    for _ in range(s.warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < s.max_runs and (len(times) < s.min_runs or time.perf_counter() - start < s.min_seconds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def reset_peak_memory() -> None:
    """Reset the kernel's resident-memory high-water mark of this process (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def row_from(times: Sequence[float], *, model: str, backend: str, precision: str, batch: int, device: str = "cpu",
             device_ms: Sequence[float] = (), gpu_mib: float | None = None, note: str = "") -> Row:
    ms = np.array(times) * 1000.0
    mean = float(ms.mean())
    return Row(model, backend, precision, batch, device, float(np.percentile(ms, 50)), float(np.percentile(ms, 90)),
               float(np.percentile(ms, 99)), mean, len(ms), batch * 1000.0 / mean,
               float(statistics.median(device_ms)) if device_ms else None, peak_memory_mib(), gpu_mib, note)


# ------------------------------------------------------------------ inputs


@functools.lru_cache(maxsize=1)
def _sample_frames() -> tuple[np.ndarray, ...]:
    from edgekit.images import read_image, sample_images

    return tuple(read_image(p) for p in sample_images())


def photos(n: int) -> list[np.ndarray]:
    """``n`` real photographs (the shipped samples, read once, repeated), as BGR frames."""
    imgs = _sample_frames()
    return [imgs[i % len(imgs)] for i in range(n)]


def prepare(path: Path, man: mf.Manifest, frames: Sequence[np.ndarray]) -> np.ndarray:
    """Frames as the runtime prepares them (one resize/crop each, then the graph's layout), stacked."""
    from edgekit.runtime.classifier import Classifier

    prep = Classifier(path, man, None, "", "")
    return np.stack([prep.prepare(f) for f in frames])


def batch_input(path: Path, man: mf.Manifest, batch: int) -> np.ndarray:
    """A batch of real photographs, prepared as the runtime prepares frames."""
    return prepare(path, man, photos(batch))


def batches_for(man: mf.Manifest, wanted: Sequence[int]) -> tuple[list[int], str]:
    first = man.input.shape[0]
    if isinstance(first, int):
        kept = [b for b in wanted if b == first]
        return kept, (f"this ONNX model has a static batch of {first}" if len(kept) < len(wanted) else "")
    return list(wanted), ""


# ------------------------------------------------------------------ backends


def time_runner(runner: Any, path: Path, man: mf.Manifest, backend: str, precision: str, batches: Sequence[int],
                s: Settings, log: Log, note: str = "") -> list[Row]:
    """Rows for one host-timed runner (anything with ``infer`` and ``description``), one per batch."""
    rows = []
    for b in batches:
        log(f"{backend} {precision} batch {b}")
        x = batch_input(path, man, b)
        reset_peak_memory()
        times = measure(partial(runner.infer, x), s)
        rows.append(row_from(times, model=man.model.name, backend=backend, precision=precision, batch=b,
                             note=note or runner.description))
    return rows
