"""Fine-tuning a zoo model on a user's class folders, into a run directory edgekit builds from.

The network trained is the one deployed: the model wrapped in the bundle's in-graph
preprocessing (:func:`edgekit.export.wrap`), fed the camera's uint8 BGR frames after the very
crop/resize the runtime does (:func:`edgekit.preprocess.fit_frame`). Training and deployment
cannot disagree on colour order, scaling or normalisation.

A run directory (``run.json`` says what it is)::

    run.json            model, preprocessing, classes, settings, per-epoch history, best epoch, report
    labels.txt          class names (the folder names), in class-index order
    split.json          which images trained and which validated
    model.safetensors   the best weights so far (by validation accuracy); its metadata names the epoch
    resume.pt           the last finished epoch (weights, optimiser): --resume continues from it
    report/             confusion.png, curves.png, per_class.txt (when training ends)

Every file is replaced by an atomic rename, so a kill at any instant leaves the last finished
epoch resumable.
"""

from __future__ import annotations

import datetime as dt
import errno
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit import bundle as bundle_mod
from edgekit.callbacks import Log
from edgekit.dataset import SPLIT_FILE, ImageFolder, Split, make_split, scan
from edgekit.deps import require
from edgekit.errors import BundleError, EdgekitError, UsageError
from edgekit.preprocess import Preprocess, _resize, crop_box, fit_frame
from edgekit.version import __version__

RUN_FILE = "run.json"
RUN_SCHEMA = "edgekit-run"
WEIGHTS = "model.safetensors"
RESUME = "resume.pt"
LABELS = "labels.txt"
REPORT = "report"

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


class TrainError(EdgekitError):
    """Training cannot go on (out of memory, a diverging loss)."""


class Interrupted(EdgekitError):
    """Ctrl-C or SIGTERM: the last finished epoch is on disk."""

    exit_code = 130


@dataclass(frozen=True)
class TrainRequest:
    out: Path
    model: str | None = None  # None with resume: the run's own
    data: Path | None = None
    weights: str = "imagenet"
    val: Path | None = None
    holdout: float = 0.2
    epochs: int = 0  # 0: 15, or the run's own on --resume
    batch: int | None = None  # None: sized to the device's memory
    lr: float = 1e-3
    input_size: int | None = None
    flip: bool = True
    min_crop: float = 0.7  # the smallest training crop, as a share of the deployed crop's side
    jitter: float = 0.2  # brightness, contrast and saturation: +- this share
    patience: int = 5  # epochs without a better validation accuracy before stopping; 0: never
    workers: int | None = None
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda
    resume: bool = False
    force: bool = False


@dataclass(frozen=True)
class Progress:
    epoch: int  # 1-based
    epochs: int
    done: int  # images of this epoch so far
    total: int
    loss: float
    accuracy: float
    images_per_s: float
    eta_s: float  # the whole run, at this pace


@dataclass
class TrainResult:
    run: Path
    info: dict[str, Any] = field(default_factory=dict)  # run.json


def _noop(*_: Any) -> None:
    pass


# ---------------------------------------------------------------- the run directory


def is_run(path: Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def read_run(path: Path) -> dict[str, Any]:
    f = Path(path) / RUN_FILE
    try:
        info: dict[str, Any] = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{f} is not readable ({exc}); train again with edgekit train --force -o {path}") from exc
    if not isinstance(info, dict) or info.get("schema") != RUN_SCHEMA:
        raise UsageError(f"{f} is not an edgekit training run (schema "
                         f"{info.get('schema') if isinstance(info, dict) else None!r})")
    try:
        for key, kind in (("model", str), ("classes", list), ("preprocess", dict), ("config", dict),
                          ("state", str), ("history", list)):
            if not isinstance(info.get(key), kind):
                raise ValueError(f"'{key}' is missing or not a {kind.__name__}")
        for key in ("model", "weights", "input_size", "epochs"):
            if key not in info["config"]:
                raise ValueError(f"'config.{key}' is missing")
        Preprocess.from_dict(info["preprocess"])
    except (ValueError, KeyError, TypeError, AssertionError, EdgekitError) as exc:
        raise UsageError(f"{f} is damaged ({exc}); train again with edgekit train --force -o {path}") from exc
    return info


def run_preprocess(info: dict[str, Any]) -> Preprocess:
    return Preprocess.from_dict(info["preprocess"])


def _write_json(path: Path, info: dict[str, Any]) -> None:
    bundle_mod.write_text_atomic(path, json.dumps(info, indent=1) + "\n")


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


# ---------------------------------------------------------------- the model


def _build_model(spec: Any, weights: str, n: int, size: int, log: Log) -> tuple[Any, Preprocess, str, bool]:
    """(model with an n-class head, the preprocessing its weights expect, what they are, pretrained)."""
    torch = require("torch", "training")
    from edgekit import weights as weights_mod

    head = weights_mod.CLASSIFIER[spec.name]
    if weights == "random":
        torch.manual_seed(0)
        return spec.builder(n, size), spec.preprocess(None, size), "random (untrained) weights", False
    model, loaded = weights_mod.build(spec, weights, size)
    layer = getattr(model, head)
    if loaded.num_classes != n:
        log(f"new classifier: {n} classes in place of the weights' {loaded.num_classes}")
        torch.manual_seed(0)
        setattr(model, head, torch.nn.Linear(layer.in_features, n))
    return model, spec.preprocess(loaded.source, size), loaded.description, True


def _param_groups(model: Any, head: str, lr: float, pretrained: bool) -> list[dict[str, Any]]:
    """The new classifier learns at lr; pretrained layers at a tenth of it, to keep what they know."""
    head_params = list(getattr(model, head).parameters())
    ids = {id(p) for p in head_params}
    body = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": head_params, "lr": lr, "base_lr": lr},
            {"params": body, "lr": lr * (0.1 if pretrained else 1.0), "base_lr": lr * (0.1 if pretrained else 1.0)}]


def _lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then a cosine to zero; ``progress`` in epochs done / epochs."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / max(1e-9, 1 - warmup))))


# ---------------------------------------------------------------- checkpoints


def _state_dict_cpu(model: Any) -> dict[str, Any]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def _save_weights(path: Path, model: Any, meta: dict[str, str]) -> None:
    st = require("safetensors.torch", "saving checkpoints")
    bundle_mod.write_bytes_atomic(path, st.save(_state_dict_cpu(model), metadata=meta))


def weights_meta(path: Path) -> dict[str, str]:
    """The metadata saved with the best weights (which epoch, its validation accuracy)."""
    st = require("safetensors", "reading checkpoints")
    try:
        with st.safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # a torn or foreign file: no best epoch on record
        return {}


def _save_resume(path: Path, state: dict[str, Any]) -> None:
    torch = require("torch", "saving checkpoints")
    buf = io.BytesIO()
    torch.save(state, buf)
    bundle_mod.write_bytes_atomic(path, buf.getvalue())


# ---------------------------------------------------------------- training


def train(req: TrainRequest, log: Log = _noop, progress: Callable[[Progress], None] = _noop) -> TrainResult:
    """Train (or resume) into ``req.out``; the best weights by validation accuracy are kept."""
    torch = require("torch", "training")
    require("safetensors", "training")
    require("matplotlib", "the training report")  # before any work, not after the last epoch
    from edgekit.export import check_input_size

    out = Path(req.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with bundle_mod.lock(out):
        # what a killed write left: .FILE.tmp-PID-* in the run, a .RUN.tmp-* staging beside it
        bundle_mod.recover(out.parent, only=out.name, mine=out.name)
        if out.is_dir():
            bundle_mod.recover(out, inside=True)
        if req.resume:
            info, spec, split, req = _resume_state(out, req)
        else:
            req = replace(req, epochs=req.epochs or DEFAULT_EPOCHS)
            info, spec, split = _new_run(out, req, log)
        pre = run_preprocess(info)
        check_input_size(spec, pre.height)
        return _loop(out, req, info, spec, split, pre, log, progress, torch)


def _new_run(out: Path, req: TrainRequest, log: Log) -> tuple[dict[str, Any], Any, Split]:
    from edgekit.export import check_input_size
    from edgekit.zoo.registry import get_spec

    if req.model is None or req.data is None:
        raise UsageError("give --model NAME and --data DIR (a folder per class), or --resume to continue a run")
    spec = get_spec(req.model)
    size = req.input_size or spec.input_size
    check_input_size(spec, size)
    if req.weights == "imagenet" and spec.weight_source("imagenet") is None:
        raise UsageError(f"{spec.name} has no published ImageNet weights to start from; pass --weights random "
                         "(training from scratch needs more images and epochs) or --weights PATH")
    _check_request(req)
    if out.exists():
        if is_run(out):
            if not req.force:
                old = read_run(out)
                done = old.get("epochs_done", 0)
                what = ("a finished run" if old.get("state") != "training"
                        else f"an unfinished run ({done} of {old.get('config', {}).get('epochs')} epochs)")
                raise UsageError(f"{out} holds {what}; pass --resume to continue it, --force to train anew "
                                 "in its place, or choose another -o")
        elif out.is_dir() and any(out.iterdir()):
            raise UsageError(f"{out} exists and is not a training run; choose another -o (edgekit never deletes "
                             "a folder it did not make)")
        elif not out.is_dir():
            raise UsageError(f"{out} exists and is not a folder; choose another -o")
    _check_places(out, req)
    data = scan(Path(req.data), what="--data")
    val = scan(Path(req.val), data.classes, what="--val") if req.val is not None else None
    if req.val is not None and Path(req.val).resolve() == Path(req.data).resolve():
        raise UsageError("--val is the --data folder; validation images must not be trained on (drop --val to "
                         "hold out a share of --data)")
    split = make_split(data, req.holdout, req.seed, val)
    _check_split(split, data)
    log(f"data: {len(data.classes)} classes, {len(split.train)} training and {len(split.val)} validation images "
        f"({'from ' + str(req.val) if req.val else f'{req.holdout:.0%} of each class held out, seed {req.seed}'})")
    model, pre, what, pretrained = _build_model(spec, req.weights, len(data.classes), size, log)
    del model  # built again in the loop; this checked the weights before anything was written
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(req).items()
           if k not in ("out", "resume", "force")}
    cfg.update(model=spec.name, input_size=size, data=str(Path(req.data).resolve()),
               val=str(Path(req.val).resolve()) if req.val else None,
               weights=str(Path(req.weights).resolve()) if Path(req.weights).is_file() else req.weights)
    info = {
        "schema": RUN_SCHEMA, "schema_version": 1, "edgekit_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": spec.name, "version": spec.version, "weights": what, "pretrained": pretrained,
        "classes": list(data.classes), "labels": LABELS, "split": SPLIT_FILE,
        "images": {"train": len(split.train), "val": len(split.val)},
        "preprocess": pre.to_dict(), "config": cfg, "state": "training", "epochs_done": 0,
        "history": [], "best": None,
    }
    # only now, every check passed, does the new run replace an old one (ours) or an empty folder, in one step
    with bundle_mod.staging(out, force=True, mark=RUN_FILE) as tmp:
        (tmp / LABELS).write_text("\n".join(data.classes) + "\n", encoding="utf-8")
        (tmp / SPLIT_FILE).write_text(split.to_json(), encoding="utf-8")
        _write_json(tmp / RUN_FILE, info)
    return info, spec, split


DEFAULT_EPOCHS = 15


def _check_request(req: TrainRequest) -> None:
    """The numbers of a request, new or read back from a run.json (where anything may have been typed)."""
    def number(flag: str, v: Any, lo: float, hi: float, kind: type = int) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)) \
                or not lo <= v <= hi:
            raise UsageError(f"{flag} must be {'a whole number ' if kind is int else ''}from {lo:g} to {hi:g}, "
                             f"got {v!r}")

    number("--epochs", req.epochs, 1, 10000)
    if req.batch is not None:  # batch norm learns nothing from one image a step
        number("--batch", req.batch, 2, 4096)
    if req.workers is not None:
        number("--workers", req.workers, 0, 64)
    number("--min-crop", req.min_crop, 0.05, 1, float)
    number("--jitter", req.jitter, 0, 0.99, float)
    number("--lr", req.lr, 1e-9, 10, float)
    number("--patience", req.patience, 0, 10000)
    number("--seed", req.seed, 0, 2**32 - 1)
    number("--holdout", req.holdout, 0, 1, float)


def _check_places(out: Path, req: TrainRequest) -> None:
    """-o must not hold, or be held by, the images or the starting weights: --force replaces it whole."""
    o = out.resolve()
    for flag, p in (("--data", req.data), ("--val", req.val), ("--weights", req.weights)):
        if p is None or (flag == "--weights" and not Path(str(p)).exists()):
            continue
        q = Path(str(p)).resolve()
        if q == o or o in q.parents or q in o.parents:
            raise UsageError(f"{flag} {p} and -o {out} overlap: a run directory is replaced whole (--force) and "
                             f"its files would be trained on; put the run elsewhere (e.g. -o runs/NAME)")


def _check_split(split: Split, data: ImageFolder) -> None:
    have = {c for _, c in split.train}
    lacking = [data.classes[c] for c in range(len(data.classes)) if c not in have]
    if lacking:
        raise UsageError(f"class(es) {', '.join(lacking[:5])} have no training images left after holding out "
                         "validation images; add images or lower --holdout")


def _resume_state(out: Path, req: TrainRequest) -> tuple[dict[str, Any], Any, Split, TrainRequest]:
    from edgekit.zoo.registry import get_spec

    if not is_run(out):
        raise UsageError(f"{out} holds no training run to resume (no {RUN_FILE}); start one with "
                         "edgekit train --model NAME --data DIR -o DIR")
    info = read_run(out)
    cfg = info["config"]
    given = {"--model": (req.model, cfg["model"]), "--data": (req.data, cfg["data"])}
    for flag, (mine, theirs) in given.items():
        same = (get_spec(str(mine)).name == theirs if flag == "--model"
                else str(Path(str(mine)).resolve()) == str(theirs)) if mine is not None else True
        if not same:
            raise UsageError(f"{flag} {mine} differs from the run's ({theirs}); --resume continues a run as it was "
                             "started (drop the flag), --force starts anew")
    if info.get("state") != "training":
        raise UsageError(f"{out} is a finished run ({info.get('stop_reason', '')}); build it with edgekit build {out}, "
                         "or pass --force to train anew")
    split = Split.read(out / SPLIT_FILE)
    epochs = req.epochs if req.epochs else cfg["epochs"]
    try:
        new = replace(req, model=cfg["model"], data=Path(cfg["data"]), weights=cfg["weights"],
                      val=Path(cfg["val"]) if cfg.get("val") else None, holdout=cfg["holdout"], epochs=epochs,
                      batch=req.batch or cfg.get("batch"), lr=cfg["lr"], input_size=cfg["input_size"],
                      flip=bool(cfg["flip"]), min_crop=cfg["min_crop"], jitter=cfg["jitter"],
                      patience=cfg["patience"], seed=cfg["seed"],
                      workers=req.workers if req.workers is not None else cfg.get("workers"))
        _check_request(new)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{out / RUN_FILE} is damaged (config: {exc}); train anew with --force") from exc
    except UsageError as exc:
        raise UsageError(f"{exc} (read from the run's {RUN_FILE} or given with --resume)") from exc
    info["config"]["epochs"] = epochs
    return info, get_spec(cfg["model"]), split, new


def _loop(out: Path, req: TrainRequest, info: dict[str, Any], spec: Any, split: Split, pre: Preprocess, log: Log,
          progress: Callable[[Progress], None], torch: Any) -> TrainResult:
    from edgekit import weights as weights_mod
    from edgekit.export import wrap

    missing = split.missing()
    if missing:
        raise UsageError(f"{len(missing)} image(s) of the run's split are gone (e.g. {missing[0]}); put them back, "
                         "or train anew with --force")
    device = _device(req.device)
    jetson = _is_jetson(torch if device == "cuda" else None)
    amp = device == "cuda"
    head = weights_mod.CLASSIFIER[spec.name]
    resume = out / RESUME
    state: dict[str, Any] | None = None
    if req.resume and (resume.is_file() or resume.is_symlink()):
        try:
            state = torch.load(resume, map_location="cpu", weights_only=True)
            # the starting weights are not needed again (no download, no checkpoint file): the state has them all
            model, pretrained = spec.builder(len(split.classes), pre.height), bool(info.get("pretrained"))
            model.load_state_dict(state["model"])
            int(state["epoch"]), list(state["history"]), int(state["bad_epochs"]), dict(state["optimizer"])
        except Exception as exc:  # torch.load and load_state_dict raise many kinds; an empty file, an odd one
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise UsageError(f"{resume} is damaged ({why}); train anew with edgekit train --force -o {out}") from exc
    else:
        if req.resume and info.get("epochs_done"):
            log(f"warning: {resume} is missing, so the {info['epochs_done']} finished epoch(s) cannot be continued: "
                "training starts again from the first epoch")
        model, _, _, pretrained = _build_model(spec, info["config"]["weights"], len(split.classes), pre.height,
                                               _noop)
    net = wrap(model, pre, float_input=False).to(device)
    if req.batch:
        batch, why = req.batch, f"batch {req.batch}"
    else:
        memory = (torch.cuda.mem_get_info()[0] / 2**20 if device == "cuda" and not jetson
                  else _meminfo_mib("MemAvailable"))
        params = sum(int(p.numel()) for p in model.parameters())
        batch, why, warn = default_batch(spec.name, pre.height, spec.input_size, device, jetson, memory, amp,
                                         params, cuda_overhead_mib(torch.version.cuda))
        if warn:
            log(f"warning: {warn}")
    workers = req.workers if req.workers is not None else default_workers(jetson)
    info["sizing"] = {"batch": batch, "workers": workers}  # what this machine chose; a resume elsewhere re-sizes
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    log(f"training {spec.name} at {pre.height} px on {where}{', mixed precision' if amp else ''}: {why}, "
        f"{workers} image-reading process{'es' if workers != 1 else ''}")
    info["device"] = where
    opt = torch.optim.AdamW(_param_groups(model, head, req.lr, bool(pretrained)), weight_decay=1e-4)
    # torch.amp.GradScaler is 2.3+; NVIDIA's wheels for JetPack 5 (Python 3.8) stop at torch 2.1
    scaler = (torch.amp.GradScaler("cuda", enabled=amp) if hasattr(torch.amp, "GradScaler")
              else torch.cuda.amp.GradScaler(enabled=amp))
    start = 0
    history: list[dict[str, Any]] = []
    bad = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        if amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, history, bad = int(state["epoch"]), list(state["history"]), int(state["bad_epochs"])
        if not 0 <= start <= len(history) + 1:
            raise UsageError(f"{resume} is damaged (epoch {start}, {len(history)} epochs of history); train anew "
                             "with --force")
        log(f"resuming after epoch {start} of {req.epochs}")
    meta = weights_meta(out / WEIGHTS) if (out / WEIGHTS).is_file() else {}
    try:
        best = (float(meta["val_accuracy"]), int(meta["epoch"])) if "val_accuracy" in meta else (-1.0, 0)
    except (ValueError, KeyError):
        best = (-1.0, 0)
    # the resume state, not run.json, says what is done: a kill between the two writes leaves run.json behind
    info.update(epochs_done=start, history=history,
                best={"epoch": best[1], "val_accuracy": best[0]} if best[1] else None)
    train_files = [(split.train_root / r, c) for r, c in split.train]
    val_files = [(split.val_root / r, c) for r, c in split.val]
    # readers start once and live across epochs: each start forks this process (CUDA and all), which is
    # where boards run out of memory (errno 12 at fork). Pinned memory only on a desktop GPU: on a Jetson
    # it is RAM that cannot be swapped, for a copy that unified memory does not need.
    loader_args = {"batch_size": batch, "num_workers": workers, "collate_fn": _collate,
                   "worker_init_fn": _quiet_worker if workers else None,
                   "persistent_workers": workers > 0, "pin_memory": device == "cuda" and not jetson}
    val_loader = torch.utils.data.DataLoader(_Images(val_files, pre, False, req), shuffle=False, **loader_args)
    sampler = _EpochSampler(len(train_files), req.seed)
    loader = torch.utils.data.DataLoader(_Images(train_files, pre, True, req), sampler=sampler,
                                         drop_last=len(train_files) > batch, **loader_args)
    steps = max(1, math.ceil(len(train_files) / batch))
    t_run = time.perf_counter()
    seen_at_start = 0
    stop_reason = ""
    stop = _StopOnSignal()
    if req.patience and bad >= req.patience:  # killed while writing the report of an early stop
        start = req.epochs
        stop_reason = (f"stopped early after epoch {len(history)}: no better validation accuracy for "
                       f"{req.patience} epochs")
    try:
        for epoch in range(start, req.epochs):
            t0 = time.perf_counter()
            torch.manual_seed(req.seed * 100003 + epoch)  # dropout: the same after a resume
            sampler.epoch = epoch  # the shuffle and the views: the same after a resume
            net.train()
            tot_loss, correct, count, unreadable = 0.0, 0, 0, 0
            for i, (x, y, bad_images) in enumerate(loader):
                if stop.asked:
                    break
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * _lr_factor((epoch + i / steps) / req.epochs, 1.0 / req.epochs
                                                        if req.epochs > 1 else 0.0)
                unreadable += bad_images
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if len(y) < 2:
                    continue
                try:
                    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
                        logits = net(x)
                        loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                except torch.cuda.OutOfMemoryError as exc:
                    raise TrainError(
                        f"out of GPU memory at batch {batch} ({spec.name}, {pre.height} px); resume with a smaller "
                        f"batch: edgekit train --resume -o {out} --batch {max(1, batch // 2)}") from exc
                if not math.isfinite(float(loss.detach())):
                    raise TrainError(f"the loss became {float(loss.detach())} in epoch {epoch + 1}: training "
                                     f"diverged; train anew with a lower --lr (now {req.lr:g}), e.g. "
                                     f"--lr {req.lr / 10:g} --force")
                tot_loss += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                count += len(y)
                elapsed = time.perf_counter() - t_run
                seen_at_start += len(y)
                rate = seen_at_start / max(elapsed, 1e-9)
                left = (req.epochs - epoch) * len(train_files) - (i + 1) * batch
                progress(Progress(epoch + 1, req.epochs, min((i + 1) * batch, len(train_files)), len(train_files),
                                  tot_loss / max(count, 1), correct / max(count, 1), rate,
                                  max(0.0, left / max(rate, 1e-9)) * 1.2))
            if stop.asked:
                raise KeyboardInterrupt
            if count == 0:
                raise UsageError(f"no readable training images in {split.train_root}; check the files")
            if unreadable and epoch == start:
                log(f"warning: {unreadable} training image(s) could not be read and were left out")
            vloss, vacc, _ = _validate(net, val_loader, device, amp, len(split.classes), torch)
            seconds = time.perf_counter() - t0
            row = {"epoch": epoch + 1, "train_loss": round(tot_loss / count, 5),
                   "train_accuracy": round(correct / count, 5),
                   "val_loss": round(vloss, 5), "val_accuracy": round(vacc, 5), "seconds": round(seconds, 2),
                   "images_per_s": round(count / seconds, 2)}
            history.append(row)
            # a kill after this epoch's best weights were written but before its state was: the same epoch again
            # is the same best, not a worse one
            improved = vacc > best[0] or best[1] == epoch + 1
            if improved:
                best = (vacc, epoch + 1)
                _save_weights(out / WEIGHTS, model, {"epoch": str(epoch + 1), "val_accuracy": repr(vacc),
                                                     "model": spec.name, "classes": str(len(split.classes))})
                bad = 0
                bundle_mod.pause_point("train.weights_saved")
            else:
                bad += 1
            _save_resume(out / RESUME, {"model": _state_dict_cpu(model), "optimizer": opt.state_dict(),
                                        "scaler": scaler.state_dict() if amp else {}, "epoch": epoch + 1,
                                        "history": history, "bad_epochs": bad})
            bundle_mod.pause_point("train.resume_saved")
            info.update(epochs_done=epoch + 1, history=history,
                        best={"epoch": best[1], "val_accuracy": best[0]})
            _write_json(out / RUN_FILE, info)
            log(f"epoch {epoch + 1}/{req.epochs}: loss {row['train_loss']:.3f}, train {row['train_accuracy']:.1%}, "
                f"validation {vacc:.1%} (loss {vloss:.3f}){' best' if improved else ''}, {seconds:.0f} s, "
                f"{row['images_per_s']:.0f} images/s")
            if stop.asked:  # asked during validation: this epoch is saved, then stop
                raise KeyboardInterrupt
            if req.patience and bad >= req.patience and epoch + 1 < req.epochs:
                stop_reason = (f"stopped early after epoch {epoch + 1}: no better validation accuracy for "
                               f"{req.patience} epochs")
                log(stop_reason)
                break
    except OSError as exc:
        if exc.errno != errno.ENOMEM:
            raise
        raise TrainError(_out_of_memory(out, workers, batch, f"cannot start an image-reading process ({exc})")) from exc
    except RuntimeError as exc:  # a reader died: SIGKILL is the kernel's OOM killer, anything else is not memory
        text = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        if "DataLoader worker" not in text:
            raise
        if "Killed" in text:
            raise TrainError(_out_of_memory(out, workers, batch, text)) from exc
        raise TrainError(f"an image-reading process ended ({text.rstrip(' .')}); the run is saved after its last "
                         f"finished epoch: edgekit train --resume -o {out} continues it") from exc
    except KeyboardInterrupt:
        done = info["epochs_done"]
        del loader, val_loader  # readers end now, in the normal way, not at the interpreter's exit
        raise Interrupted(f"{stop.what()}; the run is saved after epoch {done} of {req.epochs}: "
                          f"edgekit train --resume -o {out} continues it") from None
    finally:
        stop.restore()
    if best[1] == 0:
        raise TrainError("no epoch finished with a validation accuracy; nothing to keep")
    return _finish(out, info, model, net, val_loader, device, amp, split, stop_reason or
                   f"trained {info['epochs_done']} epochs", log, torch)


def _out_of_memory(out: Path, workers: int, batch: int, what: str) -> str:
    return (f"out of memory: {what}; the run is saved after its last finished epoch: resume with fewer readers and "
            f"a smaller batch, e.g. edgekit train --resume -o {out} --workers {max(0, min(1, workers - 1))} "
            f"--batch {max(1, batch // 2)} (on a Jetson also add swap and stop the desktop: sudo systemctl "
            "isolate multi-user.target)")


class _StopOnSignal:
    """Ctrl-C and SIGTERM (systemd, docker stop) end training at the next step, not at whatever instant
    the signal lands: a KeyboardInterrupt inside the data loader's machinery can leave a lock held and
    the process hung at exit. A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        import signal
        import threading

        self.asked = 0
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():  # signals are the main thread's only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = signum

    def what(self) -> str:
        import signal

        return "stopped by SIGTERM" if self.asked == signal.SIGTERM else "interrupted"

    def restore(self) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def _validate(net: Any, loader: Any, device: str, amp: bool, n: int, torch: Any) -> tuple[float, float, np.ndarray]:
    """(loss, accuracy, confusion matrix [true, predicted]) on the validation images."""
    net.eval()
    conf = np.zeros((n, n), np.int64)
    tot = 0.0
    with torch.no_grad():
        for x, y, _ in loader:
            x, y = x.to(device), y.to(device)
            if len(y) == 0:
                continue
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
                logits = net(x).float()
            tot += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            np.add.at(conf, (y.cpu().numpy(), logits.argmax(1).cpu().numpy()), 1)
    count = int(conf.sum())
    if count == 0:
        raise UsageError("no readable validation images; check the files of the validation split")
    return tot / count, float(np.trace(conf)) / count, conf


def _finish(out: Path, info: dict[str, Any], model: Any, net: Any, val_loader: Any, device: str, amp: bool,
            split: Split, reason: str, log: Log, torch: Any) -> TrainResult:
    """The report, on the best weights: per-class accuracy, the confusion matrix, the curves."""
    st = require("safetensors.torch", "reading checkpoints")
    model.load_state_dict(st.load_file(str(out / WEIGHTS)))
    net.to(device)
    _, acc, conf = _validate(net, val_loader, device, amp, len(split.classes), torch)
    per = [{"class": name, "images": int(conf[c].sum()), "correct": int(conf[c, c]),
            "accuracy": round(float(conf[c, c]) / max(1, int(conf[c].sum())), 5)}
           for c, name in enumerate(split.classes)]
    from edgekit.train_report import write_report

    rep = out / REPORT
    rep.mkdir(exist_ok=True)
    try:
        write_report(rep, info["history"], conf, list(split.classes), per)
    except Exception as exc:  # the pictures are a convenience: a plotting library's quirk must not strand a run
        if isinstance(exc, BundleError):  # a full disk: say so, the run stays resumable
            raise
        log(f"warning: the report's pictures were not drawn ({type(exc).__name__}: {str(exc)[:160]}); the "
            "figures are in run.json")
    info.update(state="finished", stop_reason=reason, seconds=round(sum(h["seconds"] for h in info["history"]), 1),
                report={"val_accuracy": round(acc, 5), "per_class": per, "confusion": conf.tolist(),
                        "pictures": [f"{REPORT}/confusion.png", f"{REPORT}/curves.png"]},
                weights_sha256=bundle_mod.sha256(out / WEIGHTS))
    _write_json(out / RUN_FILE, info)
    (out / RESUME).unlink(missing_ok=True)  # a finished run is built, not continued
    log(f"best: epoch {info['best']['epoch']}, validation accuracy {acc:.1%}; report in {rep}")
    return TrainResult(out, info)


# ---------------------------------------------------------------- from a run to a bundle


def finished_run(run: Path) -> dict[str, Any]:
    info = read_run(run)
    if info.get("state") != "finished":
        raise UsageError(f"{run} is a training run that has not finished ({info.get('epochs_done', 0)} epochs done); "
                         f"let it finish, or continue it: edgekit train --resume -o {run}")
    if not (Path(run) / WEIGHTS).is_file():
        raise UsageError(f"{run} has no {WEIGHTS}; train again with edgekit train --force -o {run}")
    try:
        int(info["best"]["epoch"]), float(info["report"]["val_accuracy"]), dict(info["images"]), str(info["weights"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{Path(run) / RUN_FILE} is damaged (no {exc} of a finished run); train again with "
                         f"edgekit train --force -o {run}") from exc
    return info


def bundle_for_run(run: Path, out: Path | None, force: bool, log: Log = _noop, batch: int | None = None,
                   float_input: bool = False) -> Path:
    """The bundle of a finished run (``RUN/bundle`` unless ``out``): exported from its best weights with
    its own preprocessing and labels, or reused when it already holds exactly those weights."""
    from edgekit import manifest as mf
    from edgekit.export import ExportRequest, export

    run = Path(run)
    info = finished_run(run)
    sha = bundle_mod.sha256(run / WEIGHTS)
    target = Path(out) if out is not None else run / "bundle"
    if target.exists() and not force:
        try:
            man = mf.read(target)
        except EdgekitError:
            man = None
        made = (man.validation.get("training") or {}) if man is not None else {}
        if made.get("weights_sha256") == sha and not float_input and batch is None:
            log(f"{target} already holds this run's best weights")
            return target
        if not made or out is not None:
            raise UsageError(f"{target} already exists; pass --force to replace it, or choose another -o")
        log(f"{target} holds an earlier training of this run: exporting it again")
        force = True
    training = {"run": str(run.resolve()), "weights_sha256": sha, "best_epoch": info["best"]["epoch"],
                "val_accuracy": info["report"]["val_accuracy"], "images": info["images"],
                "weights": info["weights"]}
    req = ExportRequest(info["model"], target, str(run / WEIGHTS), run / LABELS, int(info["config"]["input_size"]),
                        batch, float_input, None, None, force, preprocess=run_preprocess(info), training=training)
    return export(req, log=log).bundle


def run_split(run: Path) -> Split:
    return Split.read(Path(run) / SPLIT_FILE)
