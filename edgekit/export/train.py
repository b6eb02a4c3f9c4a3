"""Fine-tuning a zoo model on a user's class folders, into a run directory edgekit builds from:
the checks of a new or resumed run, then the loop (edgekit.export.train_loop).

The network trained is the one deployed: the model wrapped in the bundle's in-graph
preprocessing (:func:`edgekit.export.torch_onnx.wrap`), fed the camera's uint8 BGR frames after the very
crop/resize the runtime does (:func:`edgekit.preprocess.fit_frame`). Training and deployment
cannot disagree on colour order, scaling or normalisation. The run directory is described in
edgekit.export.train_run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

from edgekit import bundle as bundle_mod
from edgekit.callbacks import Log
from edgekit.deps import require
from edgekit.errors import UsageError
from edgekit.export.dataset import SPLIT_FILE, ImageFolder, Split, make_split, scan
from edgekit.export.train_loop import _build_model, _loop
from edgekit.export.train_run import (
    LABELS,
    RUN_FILE,
    RUN_SCHEMA,
    Progress,
    TrainRequest,
    TrainResult,
    _noop,
    _write_json,
    is_run,
    read_run,
    run_preprocess,
)
from edgekit.version import __version__

# ---------------------------------------------------------------- training


def train(req: TrainRequest, log: Log = _noop, progress: Callable[[Progress], None] = _noop) -> TrainResult:
    """Train (or resume) into ``req.out``; the best weights by validation accuracy are kept."""
    torch = require("torch", "training")
    require("safetensors", "training")
    require("matplotlib", "the training report")  # before any work, not after the last epoch
    from edgekit.export.torch_onnx import check_input_size

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
    from edgekit.export.torch_onnx import check_input_size
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
