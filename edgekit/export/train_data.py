"""What training runs on and is fed: the device, a batch and reader count sized to its memory,
and the training images (augmented views of the camera's frames, read in worker processes)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.deps import require
from edgekit.errors import UsageError
from edgekit.export.train_run import TrainRequest
from edgekit.preprocess import Preprocess, _resize, crop_box, fit_frame

# Training memory per image (MiB) at each model's own input size with mixed precision, as
# edgekit trains on a GPU: peak at batch 16 minus peak at batch 8, over 8, measured on an H100
# (benchmarks/train_speed.py --memory; benchmarks/device/h100-2026-11-28-train-googlenet-gpu.json).
# Scaled by the input area; float32 (CPU) takes about 1.7 times as much (an estimate).
TRAIN_MIB_PER_IMAGE = {
    "googlenet": 35.6,
    "bn_inception": 34.9,
    "inception_v3": 53.2,
    "inception_v4": 91.1,
    "inception_resnet_v1": 76.1,
    "inception_resnet_v2": 96.5,
}
# What CUDA, cuDNN and PyTorch themselves take on a Jetson's shared memory before any batch.
JETSON_CUDA_OVERHEAD_MIB = 1536


# ---------------------------------------------------------------- device and sizes


def _device(want: str) -> str:
    torch = require("torch", "training")
    if want == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but PyTorch sees no CUDA GPU here (a CPU-only torch wheel, or no driver); "
                         "drop --device to train on the CPU")
    if want not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {want!r}")
    return "cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu"


def _meminfo_mib(key: str) -> float:
    """A /proc/meminfo figure (MemTotal, MemAvailable) in MiB; 8 GiB when unreadable."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 8192.0


def _is_jetson(torch: Any = None) -> bool:
    """A Jetson, also inside a container that hides the device tree: the GPU shares the CPU's memory."""
    if Path("/etc/nv_tegra_release").exists() or "tegra" in _read("/proc/device-tree/compatible"):
        return True
    try:
        return bool(torch is not None and torch.cuda.is_available()
                    and torch.cuda.get_device_properties(0).is_integrated)
    except (RuntimeError, AttributeError):
        return False


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cuda_overhead_mib(cuda_version: str | None) -> int:
    """What CUDA, cuDNN and PyTorch take on a Jetson before any tensor: over 1 GB without lazy module
    loading (CUDA before 11.7: JetPack 5's 11.4), about half that with it (JetPack 6's 12.x)."""
    try:
        major, minor = (int(p) for p in (cuda_version or "").split(".")[:2])
    except ValueError:
        return JETSON_CUDA_OVERHEAD_MIB
    return JETSON_CUDA_OVERHEAD_MIB if (major, minor) < (11, 7) else 1024


def default_batch(model: str, size: int, native: int, device: str, jetson: bool, memory_mib: float,
                  amp: bool, params: int = 0, overhead_mib: float = JETSON_CUDA_OVERHEAD_MIB
                  ) -> tuple[int, str, str | None]:
    """A batch that fits, why, and a warning when even the smallest may not.

    ``memory_mib``: what is free (a Jetson's MemAvailable, shared by CPU and GPU; a desktop GPU's free
    memory; the RAM). The model's own state comes off first: weights, gradients and AdamW's two
    moments, about 18 bytes a parameter with mixed precision's copies.
    """
    per = TRAIN_MIB_PER_IMAGE.get(model, 100.0) * (size / native) ** 2 * (1.0 if amp else 1.7)
    state = params * 18 / 2**20
    if jetson:
        usable = 0.5 * memory_mib - overhead_mib - state
        lo, hi, where = 2, 32, f"{memory_mib / 1024:.1f} GB available, shared by CPU and GPU"
    elif device == "cuda":
        usable, lo, hi = 0.5 * memory_mib - state, 8, 64
        where = f"{memory_mib / 1024:.1f} GB of GPU memory free"
    else:
        usable, lo, hi, where = 0.25 * memory_mib - state, 4, 32, f"{memory_mib / 1024:.1f} GB of memory available"
    n = max(1, int(usable // per)) if usable > 0 else 1
    b = max(lo, min(hi, 1 << (n.bit_length() - 1)))
    warn = None
    if usable < lo * per:
        warn = (f"memory is short for training {model} at {size} px: {where}, the model's state takes "
                f"{state:.0f} MiB and each image about {per:.0f} MiB; batch {b} may not fit. Free memory (on a "
                "Jetson stop the desktop: sudo systemctl isolate multi-user.target; add swap), lower --input-size, "
                "or train on a desktop GPU and copy the bundle")
    return b, f"batch {b}: about {per:.0f} MiB per image against {where} (--batch N to choose)", warn


def default_workers(jetson: bool) -> int:
    """Image-decoding processes: the cores the training step leaves free (two at most on a Jetson,
    where each is a copy of the process in memory shared with the GPU)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(0, min(2 if jetson else 8, cores - 1))


# ---------------------------------------------------------------- images


def augment(img: np.ndarray, pre: Preprocess, rng: np.random.Generator, min_crop: float, flip: bool,
            jitter: float) -> np.ndarray:
    """A training view of a BGR frame at model size: a smaller and shifted crop than the deployed
    one (the camera's framing wanders), a mirror where allowed, light and colour changes."""
    h, w = img.shape[:2]
    y0, y1, x0, x1 = crop_box(h, w, pre)
    s = float(rng.uniform(min_crop, 1.0))
    aspect = float(np.exp(rng.uniform(-0.1, 0.1)))
    ch = int(min(h, max(8, round((y1 - y0) * s / math.sqrt(aspect)))))
    cw = int(min(w, max(8, round((x1 - x0) * s * math.sqrt(aspect)))))
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    out = _resize(np.ascontiguousarray(img[top:top + ch, left:left + cw]), pre.width, pre.height, pre.interpolation)
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    if jitter > 0:
        x = out.astype(np.float32)
        x *= float(rng.uniform(1 - jitter, 1 + jitter))  # brightness
        mean = x.mean()
        x = (x - mean) * float(rng.uniform(1 - jitter, 1 + jitter)) + mean  # contrast
        grey = x.mean(axis=2, keepdims=True)
        x = (x - grey) * float(rng.uniform(1 - jitter, 1 + jitter)) + grey  # saturation
        out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


class _Images:
    """A torch Dataset of (uint8 BGR HWC at model size, class); images are read in the worker."""

    def __init__(self, files: list[tuple[Path, int]], pre: Preprocess, train: bool, req: TrainRequest) -> None:
        self.files, self.pre, self.train, self.req = files, pre, train, req

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, code: int) -> tuple[np.ndarray, int, int]:
        from edgekit.images import read_image

        # training: the sampler sends epoch * len + index, so readers that live across epochs
        # (persistent: started once) still draw each epoch's own views
        epoch, i = divmod(code, len(self.files)) if self.train else (0, code)
        path, c = self.files[i]
        try:
            img = read_image(path)
        except (UsageError, OSError, ValueError):
            return np.zeros((self.pre.height, self.pre.width, 3), np.uint8), c, 0
        if not self.train:
            return fit_frame(img, self.pre), c, 1
        # seeded by (seed, epoch, image): a resumed run sees the same views
        rng = np.random.default_rng([self.req.seed, epoch, i])
        return augment(img, self.pre, rng, self.req.min_crop, self.req.flip, self.req.jitter), c, 1


def _quiet_worker(_: int) -> None:
    """Ctrl-C and SIGTERM are the main process's to handle (it saves nothing mid-epoch and says how to
    resume); image readers ignore them instead of each printing a traceback or dying first."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # systemd signals the whole group: the main process stops them
    try:  # one thread per reader: the readers are the parallelism, the training step owns the other cores
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


class _EpochSampler:
    """A seeded shuffle per epoch, sent as epoch * n + index (see _Images.__getitem__)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        order = np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.n)
        return iter((self.epoch * self.n + order).tolist())


def _collate(rows: list[tuple[np.ndarray, int, int]]) -> tuple[Any, Any, int]:
    """(images, classes, how many were unreadable); unreadable images are left out here, before any pinning."""
    torch = require("torch", "training")
    good = [r for r in rows if r[2]]
    x = torch.from_numpy(np.stack([r[0] for r in good])) if good else torch.zeros((0, 1, 1, 3), dtype=torch.uint8)
    y = torch.tensor([r[1] for r in good], dtype=torch.int64)
    return x, y, len(rows) - len(good)
