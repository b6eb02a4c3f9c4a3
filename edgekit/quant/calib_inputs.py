"""Calibration inputs: which images calibrate and which validate, whether there are enough, and the request's checks.

Split from edgekit.quant.calibrate, which gathers its data here before it calibrates and gates a bundle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.callbacks import Log
from edgekit.errors import UsageError
from edgekit.quant import calibcache, calibdata, quantize, stats

if TYPE_CHECKING:
    from edgekit.quant.calibrate import CalibrateRequest

DEFAULT_IMAGES = 500
MIN_CALIB_IMAGES = 16  # fewer give ranges from a handful of activations: INT8 would be refused, not guessed
MIN_VAL_IMAGES = 10  # fewer tell nothing: 10 are what the gate needs at the default --min-agreement 0.99
FEW_CALIB_IMAGES = 100  # below it a warning (TensorRT's guidance is about 500 for ImageNet-like data)
DEFAULT_VAL_IMAGES = 1000


@dataclass(frozen=True)
class _Data:
    calib: calibdata.Collected
    val: calibdata.Collected
    labels: np.ndarray | None  # class index of each validation image, when its folders name classes
    val_available: int = 0  # validation samples there were (the gate used ``len(val.items)`` of them)


def _labels_of(val: calibdata.Collected, root: Path | None, man: mf.Manifest, bundle: Path,
               log: Log) -> np.ndarray | None:
    """Class indices of the validation images when they sit in folders named by the bundle's labels."""
    if root is None or not root.is_dir() or not any(p.is_dir() for p in root.iterdir()):
        return None
    from edgekit.quant.evaluate import class_map

    names = bundle_mod.read_labels(bundle, man)
    try:
        cmap = class_map(root, names, None)
    except UsageError:
        folders = sorted(p.name for p in root.iterdir() if p.is_dir())
        log(f"note: accuracy not compared with FP32: the folders in {root} ({', '.join(folders[:3])}"
            f"{', ...' if len(folders) > 3 else ''}) are not all the bundle's labels or class indices")
        return None
    classes = [calibdata.class_of(it, root) for it in val.items]
    loose = sum(c not in cmap for c in classes)
    if loose:
        log(f"note: accuracy not compared with FP32: {loose} validation image(s) sit outside the class "
            f"folders of {root}")
        return None
    return np.array([cmap[c] for c in classes], np.int64)


def _gather(req: CalibrateRequest, man: mf.Manifest, log: Log) -> _Data:
    pre = man.preprocess
    if req.split is not None:
        return _gather_split(req, man, log)
    source = Path(req.data) if req.data is not None else calibdata.default_set()
    if req.data is None:
        log(f"no --calib-data: calibrating on edgekit's general-purpose photographs ({source}); "
            "images from your own camera calibrate better (--calib-data DIR)")
    items = calibdata.discover(source, variants=8 if req.data is None else 1)
    root = source if source.is_dir() else None
    if req.val_data is not None:
        val_items = calibdata.discover(req.val_data)

        def real(it: calibdata.Item) -> str:  # the same file, however it is reached
            return f"{it.path.resolve().as_posix()}#{it.index}"

        both = {real(it) for it in items} & {real(it) for it in val_items}
        if both:
            raise UsageError(f"{len(both)} images are in both --calib-data and --val-data (e.g. {sorted(both)[0]}); "
                             "calibration and validation images must not overlap")
        calib_items = items
        val_root = Path(req.val_data) if Path(req.val_data).is_dir() else None
    else:
        if not 0 < req.holdout < 1:
            raise UsageError(f"--holdout must be between 0 and 1, got {req.holdout}")
        calib_items, val_items = calibdata.split(items, req.holdout, root)
        val_root = root
    if req.num_images is not None and req.num_images < 1:
        raise UsageError(f"--num-images must be at least 1, got {req.num_images}")
    # a fair sample: the first N of a spread order cover every class folder and the whole data
    calib = calibdata.collect(calibdata.spread(calib_items, root), pre, req.num_images or DEFAULT_IMAGES)
    val = calibdata.collect(calibdata.spread(val_items, val_root), pre, req.num_val_images or DEFAULT_VAL_IMAGES)
    if len(val.items) < len(val_items) - len(val.skipped):
        log(f"validating on {len(val.items)} of the {len(val_items)} validation images (a spread sample; "
            "--num-val-images N uses more)")
    for warn in (calibdata.skipped_warning(calib.skipped), calibdata.skipped_warning(val.skipped)):
        if warn:
            log(f"warning: {warn}")
    if req.num_images is not None and len(calib.items) < req.num_images:
        raise UsageError(
            f"asked for {req.num_images} calibration images but {source} has only {len(calib.items)} usable "
            f"({len(calib.skipped)} unreadable, {len(val_items)} held out for validation); "
            "add images or lower --num-images"
        )
    if len(calib.items) == 0 and calib_items == [] and req.val_data is None:
        raise UsageError(f"--holdout {req.holdout} held out every image of {source} for validation; "
                         "lower --holdout or add images")
    if len(calib.items) == 0:
        raise UsageError(f"no usable calibration images in {source}")
    if len(val.items) == 0:
        raise UsageError(
            f"no validation images: {source} is too small to hold out {req.holdout:.0%}; "
            "add images or pass --val-data DIR"
        )
    _enough(req, len(calib.items), len(val.items), len(val_items) - len(val.skipped), str(source), log)
    if req.int8 and req.data is not None and len(calib.items) < FEW_CALIB_IMAGES:
        log(f"warning: calibrating on {len(calib.items)} images; ranges from fewer than {FEW_CALIB_IMAGES} can clip "
            "what the camera shows (a few hundred of its own frames calibrate best)")
    return _Data(calib, val, _labels_of(val, val_root, man, req.bundle, log), len(val_items))


def _gather_split(req: CalibrateRequest, man: mf.Manifest, log: Log) -> _Data:
    """A training run's split: its training images calibrate, its validation images (labelled by their
    class folders, the bundle's labels) judge; none is in both."""
    split = req.split
    missing = split.missing()
    if missing:
        raise UsageError(f"{len(missing)} image(s) of the training run's split are not here (e.g. {missing[0]}); "
                         "calibrate where the training images are, or give --calib-data DIR and --val-data DIR")
    pre = man.preprocess
    calib = calibdata.collect(calibdata.spread(split.train_items(), split.train_root), pre,
                              req.num_images or DEFAULT_IMAGES)
    val_items = split.val_items()
    val = calibdata.collect(calibdata.spread(val_items, split.val_root), pre, req.num_val_images or DEFAULT_VAL_IMAGES)
    log(f"calibrating on {len(calib.items)} of the run's training images; the gate uses {len(val.items)} of its "
        f"{len(val_items)} validation images and their labels")
    for warn in (calibdata.skipped_warning(calib.skipped), calibdata.skipped_warning(val.skipped)):
        if warn:
            log(f"warning: {warn}")
    if len(calib.items) == 0 or len(val.items) == 0:
        raise UsageError("no readable images in the training run's split; check its files")
    if req.num_images is not None and len(calib.items) < req.num_images:
        raise UsageError(f"asked for {req.num_images} calibration images but the run has only {len(calib.items)} "
                         "usable training images; lower --num-images")
    _enough(req, len(calib.items), len(val.items), len(val_items), "the training run", log)
    # the labels are the split's own class indices (the bundle's labels are the run's classes): no folder-name
    # matching, which a stray folder (.ipynb_checkpoints) would defeat
    names = bundle_mod.read_labels(req.bundle, man)
    if list(names) != list(split.classes):
        raise UsageError(f"{req.bundle}'s labels are not the training run's classes; export the run again "
                         "(edgekit export RUN --force)")
    cls = {(split.val_root / rel).as_posix(): c for rel, c in split.val}
    labels = np.array([cls[it.path.as_posix()] for it in val.items], np.int64)
    return _Data(calib, val, labels, len(val_items))


def _val_needed(req: CalibrateRequest) -> int:
    """Validation images with which the agreement gate can fail an INT8 model that disagrees on one image in
    ten more than --min-agreement allows (0: --min-agreement 0 switches the gate off)."""
    return stats.images_to_fail(req.min_agreement) or 0


def _total_needed(req: CalibrateRequest, val: int) -> int:
    """Images in one folder that hold both enough to calibrate and, held out, ``val`` to validate."""
    return max(math.ceil(MIN_CALIB_IMAGES / (1 - req.holdout)), math.ceil(val / req.holdout))


def _more(req: CalibrateRequest, val: int, where: str) -> str:
    """What to do about too few images: where to add them, and how many in all."""
    if req.split is not None:
        return "train on more images per class (or give --calib-data DIR and --val-data DIR)"
    if req.val_data is not None:
        return "add images to --calib-data and --val-data"
    total = f"about {_total_needed(req, val)} or more in all with --holdout {req.holdout:g}"
    if req.data is None:
        return f"give your own images: --calib-data DIR ({total}), or --val-data DIR"
    return f"add images to {where} ({total}), or give --val-data DIR"


def _enough(req: CalibrateRequest, n_calib: int, n_val: int, val_there: int, where: str, log: Log) -> None:
    """Too few images to calibrate, or for the gate to tell anything (fewer than MIN_VAL_IMAGES), is one line
    with the numbers needed; fewer than the gate needs to fail at --min-agreement is a warning with the number."""
    gate_on = req.min_agreement > 0
    floor = MIN_VAL_IMAGES if gate_on else 1
    calib_short = req.int8 and n_calib < MIN_CALIB_IMAGES
    if calib_short or n_val < floor:
        if req.num_images is not None and req.num_images < MIN_CALIB_IMAGES and req.int8:
            raise UsageError(f"--num-images {req.num_images}: INT8 needs at least {MIN_CALIB_IMAGES} calibration "
                             "images")
        if not calib_short and val_there >= floor:
            raise UsageError(f"--num-val-images {n_val}: the gate needs at least {floor} validation images")
        what = (f"{n_calib} usable to calibrate and {n_val} to validate" if req.int8 else f"{n_val} to validate")
        needs = (f"at least {MIN_CALIB_IMAGES} to calibrate and {floor} to validate" if req.int8
                 else f"at least {floor} to validate FP16 against FP32")
        todo = _more(req, max(floor, _val_needed(req)), where)
        raise UsageError(f"too few images: {where} gives {what}; {'INT8' if req.int8 else 'the gate'} needs {needs} "
                         f"(with fewer, passing it would mean nothing): {todo}")
    need = _val_needed(req)
    if gate_on and n_val < need:
        log(f"warning: {n_val} validation images: the gate fails an INT8 model that disagrees with FP32 on one image "
            f"in ten more than --min-agreement {req.min_agreement:g} allows only from {need} images; "
            f"{_more(req, need, where)}")


def _check(req: CalibrateRequest) -> None:
    if req.fallback not in ("none", "auto"):
        raise UsageError(f"--fallback must be none or auto, got {req.fallback!r}")
    if not 0 <= req.min_agreement <= 1:
        raise UsageError(f"--min-agreement must be between 0 and 1, got {req.min_agreement}")
    if not 0 <= req.max_drop <= 1:
        raise UsageError(f"--max-drop must be between 0 and 100 points, got {100 * req.max_drop:g}")
    if req.method == "percentile" and not 0 < req.percentile <= 100:
        raise UsageError(f"--percentile must be in (0, 100], got {req.percentile}")
    if req.num_val_images is not None and req.num_val_images < 1:
        raise UsageError(f"--num-val-images must be at least 1, got {req.num_val_images}")
    try:
        calibcache.trt_version_number(req.cache_trt_version)
    except ValueError as exc:
        raise UsageError(f"--cache-trt-version {req.cache_trt_version!r} is not a TensorRT version "
                         "like 8.5.2 or 10.3.0") from exc
    if req.max_fallback < 0:
        raise UsageError(f"--max-fallback must be 0 or more, got {req.max_fallback}")
    if req.method not in quantize.METHODS:
        raise UsageError(f"unknown calibration method {req.method!r}; choose from {', '.join(quantize.METHODS)}")
