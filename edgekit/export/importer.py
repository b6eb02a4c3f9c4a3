"""Import a float-input ONNX classifier made elsewhere (Keras through tf2onnx, a user's own
torch.onnx.export, ...) into a bundle like export's: the camera's uint8 BGR NHWC frame in, logits out.

The model's preprocessing becomes graph nodes in front of it (Cast first: TensorRT takes a uint8
input only into a Cast; then the channel swap, the transpose to NCHW when the model wants it, and
``x * scale + offset``). A trailing Softmax is removed so the bundle outputs logits. Parity: the
imported model on preprocessing computed in numpy against the wrapped model on uint8 frames, both
with ONNX Runtime. Needs onnx and onnxruntime only (cpu tier), no torch. The graph work is
edgekit.export.onnx_wrap's, the parity check edgekit.export.parity's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import bundle
from edgekit import labels as labels_mod
from edgekit import manifest as mf
from edgekit.callbacks import Log
from edgekit.deps import require
from edgekit.errors import ExportError, UsageError
from edgekit.export.onnx_wrap import (
    INPUT_NAME,
    OUTPUT_NAME,
    Wrapped,
    _dim,
    _dims,
    _Foreign,
    _load,
    _plain,
    _save,
    _to_supported_opset,
    wrap,
)
from edgekit.export.parity import (
    PARITY_TOLERANCE,  # one parity measure and limit for every bundle
    check_parity,
    reference_input,
)
from edgekit.hashing import sha256_file
from edgekit.preprocess import Preprocess
from edgekit.version import __version__

MAX_INPUT_SIZE = 1024  # as export's --input-size
LAYOUTS = ("NCHW", "NHWC")
SCALES = (1.0, 255.0)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A common preprocessing convention; explicit flags override its fields."""

    layout: str
    color_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"


PRESETS = {  # edgekit/cli/export.py describes them for --help; a test keeps the two in step
    "keras-inception": Preset("NHWC", "RGB", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),  # x / 127.5 - 1
    "torch-imagenet": Preset("NCHW", "RGB", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "caffe": Preset("NCHW", "BGR", (104.0, 117.0, 123.0), (1.0, 1.0, 1.0)),
}


@dataclasses.dataclass(frozen=True)
class ImportRequest:
    model: Path
    out: Path | None = None
    labels: Path | None = None
    preset: str | None = None
    layout: str | None = None  # nchw | nhwc
    color: str | None = None  # rgb | bgr: the order the model was trained on
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    scale: float | None = None  # the pixel range mean/std apply to: 1 or 255 [default: from the values]
    input_size: tuple[int, int] | None = None  # (height, width) where the model does not fix them
    crop_fraction: float | None = None
    interpolation: str | None = None
    name: str | None = None  # the bundle's model name [default: from the file name]
    force: bool = False
    parity_random: int = 8


@dataclasses.dataclass(frozen=True)
class ImportResult:
    bundle: Path
    manifest: mf.Manifest
    seconds: float
    softmax_removed: bool


def _noop(_: str) -> None:
    pass


def import_model(req: ImportRequest, log: Log = _noop) -> ImportResult:
    """Wrap a foreign ONNX classifier into a new bundle; nothing is left behind if any step fails."""
    t0 = time.perf_counter()
    for module in ("onnx", "onnxruntime"):  # fail before any work
        require(module, "edgekit import")
    src = Path(req.model)
    foreign = _load(src)
    layout, pre, scale_inferred = resolve_preprocess(req, foreign)
    name = _model_name(req, src)
    if req.labels is not None and not Path(req.labels).is_file():
        raise UsageError(f"labels file {req.labels} does not exist")
    out = req.out or bundle.default_dir(name, "fp32")
    if out.exists() and not req.force:
        raise UsageError(f"{out} already exists; pass --force to replace it, or choose another -o")
    batch = _batch_of(foreign)
    classes = _classes(src, foreign, layout, pre, batch)
    names = labels_mod.read(req.labels, classes) if req.labels else labels_mod.default_for(classes)
    log(f"importing {src.name} ({foreign.producer or 'unknown producer'}, opset {foreign.opset}): "
        f"input {foreign.input_name} {_dims(foreign.input_dims)} float {layout}, output {foreign.output_name} "
        f"[N, {classes}]; batch {'dynamic' if batch is None else f'fixed at {batch}, as the model'}")
    range_note = " (from the mean/std values; --scale 1|255 sets it)" if scale_inferred else ""
    log(f"preprocessing: centre crop {pre.crop_fraction:g}, {pre.interpolation} resize to {pre.height}x{pre.width}; "
        f"{pre.color_order} pixels 0..{pre.input_range:g}{range_note}, mean {_vec(pre.mean)}, std {_vec(pre.std)}")
    original_opset = foreign.opset
    foreign = _to_supported_opset(foreign, log)
    wrapped = wrap(foreign.proto, layout, pre, batch, classes)
    stripped = wrapped.softmax_removed
    if stripped:
        log("the model ends in a Softmax: removed, so the bundle outputs logits (top-1 unchanged; "
            "parity compares probabilities)")
    if wrapped.renamed:
        log(f"{wrapped.renamed} tensor names with ':' (as tf2onnx's 'name:0') renamed with '_': TensorRT's "
            "calibration cache cannot hold them")
    size = src.stat().st_size
    with bundle.staging(out, req.force, need=int(size * 1.1) + (1 << 20)) as tmp:
        onnx_path = tmp / "model.onnx"
        te = time.perf_counter()
        _save(wrapped.proto, foreign.proto, onnx_path, log)
        log("checking parity: the wrapped model on uint8 BGR frames against the imported one on "
            "preprocessing computed in numpy (ONNX Runtime)")
        parity = check_parity(src, onnx_path, layout, pre, batch, stripped, req.parity_random)
        log(f"parity: max relative error {parity['max_rel_error']:.2e}, "
            f"top-1 {parity['top1_equal']}/{parity['inputs']} equal")
        if not parity["passed"]:
            raise ExportError(
                f"the wrapped model does not match {src.name}: relative error {parity['max_rel_error']:.2e} "
                f"(limit {PARITY_TOLERANCE:.0e}), top-1 equal on {parity['top1_equal']}/{parity['inputs']} "
                "inputs; no bundle written. Please report it with the command you ran and the model's producer"
            )
        (tmp / "labels.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
        record = _record(req, src, foreign, layout, batch, classes, wrapped, scale_inferred, original_opset)
        man = _manifest(name, foreign, pre, batch, classes, tmp, parity, record, time.perf_counter() - te, src)
        (tmp / mf.MANIFEST).write_text(man.to_json(), encoding="utf-8")
    log(f"bundle written: {out}")
    return ImportResult(out, man, time.perf_counter() - t0, stripped)


def resolve_preprocess(req: ImportRequest, foreign: _Foreign) -> tuple[str, Preprocess, bool]:
    """(layout, preprocessing, pixel range inferred?) from the preset and the flags, checked
    against the model's input shape."""
    preset = _preset(req.preset)
    layout = (req.layout.upper() if req.layout else None) or (preset.layout if preset else None)
    color = (req.color.upper() if req.color else None) or (preset.color_order if preset else None)
    mean = req.mean or (preset.mean if preset else None)
    std = req.std or (preset.std if preset else None)
    missing = [flag for flag, v in (("--layout", layout), ("--color", color), ("--mean", mean), ("--std", std))
               if v is None]
    if missing:
        raise UsageError(f"missing {', '.join(missing)}: an ONNX file does not record how its images were "
                         "prepared; pass them, or a --preset whose fields they override "
                         f"({', '.join(PRESETS)})")
    assert layout is not None and color is not None and mean is not None and std is not None
    if layout not in LAYOUTS:
        raise UsageError(f"--layout must be nchw or nhwc, got {req.layout!r}")
    if color not in ("RGB", "BGR"):
        raise UsageError(f"--color must be rgb or bgr, got {req.color!r}")
    if req.scale is not None and float(req.scale) not in SCALES:
        raise UsageError(f"--scale must be 1 (mean/std apply to pixels 0..1) or 255 (pixels 0..255), "
                         f"got {req.scale:g}")
    inferred = req.scale is None
    scale = float(req.scale) if req.scale is not None else (255.0 if max(*mean, *std) > 1 else 1.0)
    name, dims = foreign.input_name, foreign.input_dims
    c_at, other = (1, 3) if layout == "NCHW" else (3, 1)
    channels = dims[c_at]
    if isinstance(channels, int) and channels != 3:
        if dims[other] == 3:
            flip = "nhwc" if layout == "NCHW" else "nchw"
            raise UsageError(f"--layout {layout.lower()} contradicts the input {name} {_dims(dims)}: its "
                             f"channel dimension would be {channels} while dimension {other} is 3; "
                             f"pass --layout {flip}")
        raise UsageError(f"the input {name} {_dims(dims)} has {channels} channels ({layout}); edgekit imports "
                         "colour classifiers with 3 channels")
    h, w = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        if req.input_size is not None and tuple(req.input_size) != (h, w):
            raise UsageError(f"the model fixes its input at {h}x{w} ({name} {_dims(dims)}); drop --input-size "
                             f"{req.input_size[0]}x{req.input_size[1]} or pass {h}x{w}")
        size = (h, w)
    elif req.input_size is not None:
        size = (int(req.input_size[0]), int(req.input_size[1]))
        if max(size) > MAX_INPUT_SIZE:
            raise UsageError(f"--input-size {size[0]}x{size[1]} is beyond edgekit's limit of {MAX_INPUT_SIZE} "
                             "(gigabytes per image); pass the size the model was trained at")
    else:
        raise UsageError(f"the input {name} {_dims(dims)} does not fix its height and width; pass "
                         "--input-size N (or HxW): the size the model was trained at")
    pre = Preprocess(
        size[0], size[1],
        req.crop_fraction if req.crop_fraction is not None else (preset.crop_fraction if preset else 0.875),
        req.interpolation or (preset.interpolation if preset else "bilinear"),
        tuple(float(x) for x in mean), tuple(float(x) for x in std),  # type: ignore[arg-type]
        color, scale,
    )
    return layout, pre, inferred


def _preset(name: str | None) -> Preset | None:
    if name is None:
        return None
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown preset {name!r}; {hint}choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def _batch_of(foreign: _Foreign) -> int | None:
    """The model's fixed batch, or None for a dynamic one."""
    b = foreign.input_dims[0]
    return b if isinstance(b, int) and b > 0 else None


def _trial_input(layout: str, pre: Preprocess, batch: int | None) -> np.ndarray:
    n = batch or 1
    shape = (n, 3, pre.height, pre.width) if layout == "NCHW" else (n, pre.height, pre.width, 3)
    return np.zeros(shape, np.float32)


def _classes(src: Path, foreign: _Foreign, layout: str, pre: Preprocess, batch: int | None) -> int:
    """The class count, from the declared output shape and one trial run (some exporters declare none)."""
    from edgekit.runners.ort import OrtRunner

    out = foreign.proto.graph.output[0]
    declared = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in out.type.tensor_type.shape.dim)
    with OrtRunner(src) as r:
        try:
            got = r.infer(_trial_input(layout, pre, batch))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UsageError(f"ONNX Runtime cannot run the model on a {pre.height}x{pre.width} {layout} input "
                             f"({str(exc).splitlines()[0][:200]}); check --layout and --input-size") from None
    if (declared and len(declared) != 2) or got.ndim != 2 or got.dtype != np.float32:
        shape = _dims(declared) if declared else str(list(got.shape))
        raise UsageError(f"the output {foreign.output_name} is {got.dtype} {shape}; edgekit imports classifiers "
                         "whose output is float32 [N, classes]: flatten or squeeze it before exporting")
    return int(got.shape[1])


def _model_name(req: ImportRequest, src: Path) -> str:
    if req.name is not None:
        if not mf.NAME.fullmatch(req.name) or ".." in req.name:
            raise UsageError(f"--name {req.name!r} must be a plain name (letters, digits, '.', '_', '-'; at most "
                             "100; no '..'): it names files")
        return req.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", src.stem).strip("._-")
    name = re.sub(r"\.{2,}", ".", name)[:100]
    return name or "imported"


# ------------------------------------------------------------------ the manifest


def _record(req: ImportRequest, src: Path, foreign: _Foreign, layout: str, batch: int | None, classes: int,
            wrapped: Wrapped, scale_inferred: bool, original_opset: int) -> dict[str, Any]:
    """What was imported and how: the file, its producer, and the preset and flags given."""
    proto = foreign.proto
    flags = {k: v for k, v in (
        ("layout", req.layout), ("color", req.color), ("mean", list(req.mean) if req.mean else None),
        ("std", list(req.std) if req.std else None), ("scale", req.scale),
        ("input_size", list(req.input_size) if req.input_size else None), ("crop_fraction", req.crop_fraction),
        ("interpolation", req.interpolation)) if v is not None}
    return {
        "file": _plain(src.name),
        "sha256": sha256_file(src),
        "bytes": src.stat().st_size,
        "producer_name": _plain(proto.producer_name),
        "producer_version": _plain(proto.producer_version),
        "opset": foreign.opset,
        "opset_original": original_opset,
        "ir_version": int(proto.ir_version),
        "input": {"name": _plain(foreign.input_name), "layout": layout, "shape": [_dim(d) for d in foreign.input_dims]},
        "output": {"name": _plain(foreign.output_name), "classes": classes},
        "softmax_removed": wrapped.softmax_removed,
        "tensors_renamed": wrapped.renamed,
        "batch": "dynamic" if batch is None else batch,
        "preset": req.preset,
        "flags": flags,
        "pixel_range": "inferred from mean/std" if scale_inferred else "--scale",
    }


def _manifest(name: str, foreign: _Foreign, pre: Preprocess, batch: int | None, classes: int, tmp: Path,
              parity: dict[str, Any], record: dict[str, Any], seconds: float, src: Path) -> mf.Manifest:
    b: int | str = batch or "batch"
    arts = tuple(
        mf.Artifact(fname, kind, bundle.sha256(tmp / fname), (tmp / fname).stat().st_size, prec)
        for fname, kind, prec in (("model.onnx", "onnx", "fp32"), ("labels.txt", "labels", None))
    )
    params = int(sum(int(np.prod(i.dims)) for i in foreign.proto.graph.initializer))
    producer = foreign.producer or "an unknown producer"
    return mf.Manifest(
        model=mf.ModelInfo(name, f"imported ONNX ({producer})"[:200], f"imported from {_plain(src.name)}"[:4096],
                           record["sha256"], classes, params, foreign.opset),
        input=mf.TensorSpec(INPUT_NAME, "uint8", "NHWC", (b, pre.height, pre.width, 3), "BGR"),
        output=mf.TensorSpec(OUTPUT_NAME, "float32", "NC", (b, classes)),
        preprocess=pre, labels="labels.txt", artifacts=arts,
        validation={"parity": {**parity, "import_seconds": round(seconds, 2)}, "import": record},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        edgekit_version=__version__,
    )


def _vec(v: tuple[float, float, float]) -> str:
    return ",".join(f"{x:g}" for x in v)


__all__ = ["PRESETS", "ImportRequest", "ImportResult", "import_model", "reference_input"]
