"""A training run's directory: what a run asks for and reports (request, progress, result,
errors), reading and writing its files (run.json, the checkpoints), and building a finished run's
bundle. Torch-free at import: torch and safetensors are required only where a checkpoint is read or
written.

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

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit import bundle as bundle_mod
from edgekit.callbacks import Log
from edgekit.deps import require
from edgekit.errors import EdgekitError, UsageError
from edgekit.export.dataset import SPLIT_FILE, Split
from edgekit.preprocess import Preprocess

RUN_FILE = "run.json"
RUN_SCHEMA = "edgekit-run"
WEIGHTS = "model.safetensors"
RESUME = "resume.pt"
LABELS = "labels.txt"
REPORT = "report"


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
    from edgekit.export.torch_onnx import ExportRequest, export

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
