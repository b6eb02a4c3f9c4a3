"""PyTorch -> ONNX export into a bundle, parity-checked against PyTorch with ONNX Runtime."""

from __future__ import annotations

import datetime as dt
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import bundle
from edgekit import labels as labels_mod
from edgekit import manifest as mf
from edgekit.callbacks import Log
from edgekit.deps import require
from edgekit.errors import EdgekitError, ExportError, UsageError
from edgekit.export.parity import PARITY_TOLERANCE, parity_figures
from edgekit.images import read_image, sample_images
from edgekit.preprocess import Preprocess, fit_frame, graph_constants, to_model_input
from edgekit.quant.gate import run_all
from edgekit.version import __version__
from edgekit.zoo.registry import ModelSpec, get_spec

# Opset 17: the newest that TensorRT 8.5 (JetPack 5) parses; 8.6, 10.x and 11 take it too.
OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
MAX_INPUT_SIZE = 1024  # Inception fine-tunes go to 512; beyond this a trial forward pass alone takes gigabytes


@dataclass(frozen=True)
class ExportRequest:
    model: str
    out: Path | None = None
    weights: str = "imagenet"
    labels: Path | None = None
    input_size: int | None = None
    batch: int | None = None  # None: dynamic batch
    float_input: bool = False
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    force: bool = False
    parity_random: int = 8
    preprocess: Preprocess | None = None  # all of it (a training run's): overrides the weights' own and mean/std
    training: dict[str, Any] | None = None  # what trained the weights (edgekit train), for the manifest


@dataclass(frozen=True)
class ExportResult:
    bundle: Path
    manifest: mf.Manifest
    seconds: float


def _noop(_: str) -> None:
    pass


def export(req: ExportRequest, log: Log = _noop) -> ExportResult:
    """Export a zoo model into a new bundle; nothing is left behind if any step fails."""
    t0 = time.perf_counter()
    spec = get_spec(req.model)
    for module in ("torch", "onnxruntime", "onnxslim"):  # fail before any work
        require(module, "edgekit export")
    size = req.input_size if req.input_size is not None else spec.input_size
    check_input_size(spec, size)
    if req.labels is not None and not Path(req.labels).is_file():
        raise UsageError(f"labels file {req.labels} does not exist")
    if req.batch is not None and req.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {req.batch}")
    if req.weights == "imagenet" and spec.weight_source("imagenet") is None:
        raise UsageError(
            f"{spec.name} has no published ImageNet weights; pass your checkpoint with "
            "--weights PATH, or --weights random for a trial"
        )
    out = req.out or bundle.default_dir(spec.name, "fp32")
    if out.exists() and not req.force:
        raise UsageError(f"{out} already exists; pass --force to replace it, or choose another -o")

    from edgekit.zoo import weights as weights_mod

    log(f"building {spec.name} ({spec.version}) with weights: {req.weights}")
    model, loaded = weights_mod.build(spec, req.weights, size)
    names = (labels_mod.read(req.labels, loaded.num_classes) if req.labels
             else labels_mod.default_for(loaded.num_classes))
    pre = spec.preprocess(loaded.source, size)
    if req.preprocess is not None:
        pre = req.preprocess
    elif loaded.kind == "file" and (req.mean is None or req.std is None):
        log(normalisation_note(spec, pre, req, loaded.description))
    if req.mean or req.std:
        pre = Preprocess(pre.height, pre.width, pre.crop_fraction, pre.interpolation,
                         req.mean or pre.mean, req.std or pre.std, pre.color_order, pre.input_range)
    _trial_forward(spec, model, size)
    params = int(sum(p.numel() for p in model.parameters()))
    # at its peak the staging holds the exported ONNX and its simplified copy: 4 bytes a weight each
    need = 2 * 4 * params + (1 << 20)

    with bundle.staging(out, req.force, need=need) as tmp:
        onnx_path = tmp / "model.onnx"
        log(f"exporting to ONNX (opset {OPSET}, {'batch ' + str(req.batch) if req.batch else 'dynamic batch'}, "
            f"{'float NCHW' if req.float_input else 'uint8 BGR NHWC'} input)")
        te = time.perf_counter()
        to_onnx(model, pre, onnx_path, req.batch, req.float_input)
        export_s = time.perf_counter() - te
        log("checking parity: ONNX Runtime against PyTorch")
        parity = check_parity(model, pre, onnx_path, req.float_input, req.batch, req.parity_random)
        log(f"parity: max relative error {parity['max_rel_error']:.2e}, "
            f"top-1 {parity['top1_equal']}/{parity['inputs']} equal")
        if not parity["passed"]:
            raise ExportError(
                f"ONNX export of {spec.name} does not match PyTorch: relative error "
                f"{parity['max_rel_error']:.2e} (limit {PARITY_TOLERANCE:.0e}), top-1 equal on "
                f"{parity['top1_equal']}/{parity['inputs']} inputs; no bundle written. "
                "Please report it with the command you ran"
            )
        (tmp / "labels.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
        man = _manifest(spec, pre, loaded, params, names, req, tmp, parity, export_s)
        (tmp / mf.MANIFEST).write_text(man.to_json(), encoding="utf-8")
    log(f"bundle written: {out}")
    return ExportResult(out, man, time.perf_counter() - t0)


def reuse_check(req: ExportRequest, out: Path) -> str | None:
    """Why the bundle at ``out`` is not what ``req`` would export (None: it is, and can be reused).

    ``edgekit build --model`` reruns after a failed calibration gate go on from the exported bundle
    instead of stopping at "already exists"; anything that differs is named."""
    from edgekit.hashing import sha256_file

    try:
        man = mf.read(out)
    except EdgekitError as exc:
        return str(exc)
    spec = get_spec(req.model)
    size = req.input_size if req.input_size is not None else spec.input_size
    if man.model.name != spec.name:
        return f"it holds {man.model.name}, not {spec.name}"
    src = spec.weight_source(req.weights) if req.weights != "random" else None
    if req.weights == "random":
        same, want = man.model.weights.startswith("random"), "random weights"
    elif src is not None:
        same, want = man.model.weights == f"{src.provider}:{src.ident}", f"the {req.weights} weights"
    else:
        path = Path(req.weights)
        same = path.is_file() and man.model.weights_sha256 == sha256_file(path)
        want = f"the weights in {path}"
        src = spec.weight_source("imagenet")  # a checkpoint's assumed normalisation (as export assumes it)
    default = spec.preprocess(src, size)
    if not same:
        return f"it was exported from {man.model.weights}, not {want}"
    if (man.preprocess.height, man.preprocess.width) != (size, size):
        return f"its input is {man.preprocess.height}x{man.preprocess.width}, not {size}x{size}"
    if (man.input.dtype != "uint8") != req.float_input:
        return f"its input is {man.input.dtype} {man.input.layout}" + (", not float NCHW (--float-input)"
                                                                          if req.float_input else "")
    batch = man.input.shape[0]
    if (req.batch or "batch") != batch:
        return f"its batch is {batch}, not {req.batch or 'dynamic'}"
    for name, given, have in (("mean", req.mean or default.mean, man.preprocess.mean),
                              ("std", req.std or default.std, man.preprocess.std)):
        if not np.allclose(given, have, rtol=1e-6, atol=0):
            return f"its --{name} is {','.join(f'{v:g}' for v in have)}, not {','.join(f'{v:g}' for v in given)}"
    try:  # what it holds must be whole: a damaged export is not gone on from
        for art in man.artifacts:
            if art.kind in ("onnx", "labels"):
                bundle.artifact_path(out, art)
    except EdgekitError as exc:
        return str(exc)
    names = bundle.read_labels(out, man)
    wanted = labels_mod.read(req.labels, man.model.num_classes) if req.labels else \
        labels_mod.default_for(man.model.num_classes)
    if list(names) != list(wanted):
        return "its labels differ" + (f" from {req.labels}" if req.labels else " (it was given --labels)")
    return None


def normalisation_note(spec: ModelSpec, pre: Preprocess, req: ExportRequest, what: str) -> str:
    """One line: the normalisation assumed for a checkpoint (its file does not say), and the flags
    that change it."""
    def fmt(v: tuple[float, float, float]) -> str:
        return ",".join(f"{x:g}" for x in v)

    assumed = " ".join(f"--{name} {fmt(v)}" for name, v, given in (("mean", pre.mean, req.mean),
                                                                    ("std", pre.std, req.std)) if given is None)
    pixels = f"{pre.color_order} pixels 0-{pre.input_range:g}"
    why = spec.checkpoint_note or (f"as {spec.name}'s ImageNet weights" if spec.weight_source("imagenet")
                                   else f"edgekit's default for {spec.name}")
    other = (f"if it was {spec.checkpoint_alternative}" if spec.checkpoint_alternative
             else "if it was trained with other values, pass --mean R,G,B --std R,G,B")
    return f"note: {what} does not record its normalisation; assumed {assumed} on {pixels} ({why}); {other}"


def check_input_size(spec: ModelSpec, size: int) -> None:
    if size > MAX_INPUT_SIZE:
        raise UsageError(
            f"--input-size {size} is beyond edgekit's limit of {MAX_INPUT_SIZE} (the model would need gigabytes "
            f"per image); use {MAX_INPUT_SIZE} or less ({spec.name}'s default is {spec.input_size})"
        )
    if size < spec.min_input_size:
        raise UsageError(
            f"{spec.name} cannot take {size}x{size} input: its stride-2 stages shrink the image "
            f"below 1 pixel; use --input-size {spec.min_input_size} or more (default {spec.input_size})"
        )
    if size % spec.size_multiple:
        lower = max(spec.min_input_size, size - size % spec.size_multiple)
        raise UsageError(
            f"{spec.name} cannot take {size}x{size} input: {spec.size_note}; "
            f"use a multiple of {spec.size_multiple}, e.g. {lower} or {lower + spec.size_multiple}"
        )


def _trial_forward(spec: ModelSpec, model: Any, size: int) -> None:
    torch = require("torch", "exporting models")
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    except RuntimeError as exc:
        raise UsageError(
            f"{spec.name} cannot take {size}x{size} input ({str(exc).splitlines()[0][:120]}); "
            f"use its default size {spec.input_size}"
        ) from exc


def wrap(model: Any, pre: Preprocess, float_input: bool) -> Any:
    """The model with its preprocessing as graph nodes in front."""
    torch = require("torch", "exporting models")
    scale, offset = graph_constants(pre)

    class InGraphPreprocess(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.uint8 = not float_input
            self.register_buffer("scale", torch.from_numpy(scale).reshape(1, 3, 1, 1))
            self.register_buffer("offset", torch.from_numpy(offset).reshape(1, 3, 1, 1))
            self.swap = (not float_input) and pre.color_order == "RGB"
            self.register_buffer("order", torch.tensor([2, 1, 0], dtype=torch.int64))

        def forward(self, x: Any) -> Any:
            if self.uint8:
                # TensorRT takes a uint8 input only into a Cast: cast first, then transpose.
                x = x.to(torch.float32).permute(0, 3, 1, 2)
                if self.swap:
                    x = torch.index_select(x, 1, self.order)
            return self.model(x * self.scale + self.offset)

    return InGraphPreprocess().eval()


def to_onnx(model: Any, pre: Preprocess, path: Path, batch: int | None, float_input: bool) -> None:
    torch = require("torch", "exporting models")
    onnx = require("onnx", "exporting models")
    net = wrap(model, pre, float_input)
    n = batch or 1
    if float_input:
        dummy = torch.zeros(n, 3, pre.height, pre.width, dtype=torch.float32)
    else:
        dummy = torch.zeros(n, pre.height, pre.width, 3, dtype=torch.uint8)
    dynamic = None if batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    raw = path.with_suffix(".raw.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.no_grad():
                torch.onnx.export(
                    net, (dummy,), str(raw), dynamo=False, opset_version=OPSET,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic,
                    do_constant_folding=True,
                )
        proto = onnx.load(str(raw))
        proto = simplify(proto)
        proto.doc_string = "exported by edgekit"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(path))
    except (RuntimeError, ValueError, onnx.checker.ValidationError) as exc:
        raise ExportError(f"ONNX export failed: {str(exc).splitlines()[0][:300]}") from exc
    finally:
        raw.unlink(missing_ok=True)


def simplify(proto: Any) -> Any:
    """Constant folding and dead-node removal with onnxslim; names of inputs/outputs kept."""
    slim = require("onnxslim", "simplifying ONNX models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slim.slim(proto)


def parity_inputs(pre: Preprocess, n_random: int, seed: int = 0) -> np.ndarray:
    """Random uint8 BGR images plus the real sample photographs, NHWC."""
    rng = np.random.default_rng(seed)
    rand = rng.integers(0, 256, size=(n_random, pre.height, pre.width, 3), dtype=np.uint8)
    photos = [fit_frame(read_image(p), pre) for p in sample_images()]
    return np.concatenate([rand, np.stack(photos)], axis=0)


def check_parity(model: Any, pre: Preprocess, onnx_path: Path, float_input: bool,
                 batch: int | None, n_random: int = 8) -> dict[str, Any]:
    torch = require("torch", "checking export parity")
    from edgekit.runners.ort import OrtRunner

    images = parity_inputs(pre, n_random)
    ref_in = to_model_input(images, pre)
    with torch.no_grad():
        ref = np.concatenate([model(torch.from_numpy(ref_in[i:i + 4])).numpy()
                              for i in range(0, len(ref_in), 4)])
    feed = onnx_input(images, pre, float_input)
    with OrtRunner(onnx_path) as runner:
        got = run_all(runner, feed, batch or 4, static=batch is not None)
    return parity_figures(got, ref, n_random)


def onnx_input(images_bgr: np.ndarray, pre: Preprocess, float_input: bool) -> np.ndarray:
    """What the exported graph takes, from uint8 BGR NHWC images."""
    from edgekit.preprocess import graph_input

    return graph_input(images_bgr, float_input, pre.color_order)


def _manifest(spec: ModelSpec, pre: Preprocess, loaded: Any, params: int, names: list[str],
              req: ExportRequest, tmp: Path, parity: dict[str, Any], export_s: float) -> mf.Manifest:
    b: int | str = req.batch or "batch"
    if req.float_input:
        inp = mf.TensorSpec(INPUT_NAME, "float32", "NCHW", (b, 3, pre.height, pre.width), pre.color_order)
    else:
        inp = mf.TensorSpec(INPUT_NAME, "uint8", "NHWC", (b, pre.height, pre.width, 3), "BGR")
    out = mf.TensorSpec(OUTPUT_NAME, "float32", "NC", (b, loaded.num_classes))
    arts = tuple(
        mf.Artifact(name, kind, bundle.sha256(tmp / name), (tmp / name).stat().st_size, prec)
        for name, kind, prec in (("model.onnx", "onnx", "fp32"), ("labels.txt", "labels", None))
    )
    return mf.Manifest(
        model=mf.ModelInfo(spec.name, spec.version, loaded.description, loaded.sha256,
                           loaded.num_classes, params, OPSET),
        input=inp, output=out, preprocess=pre, labels="labels.txt", artifacts=arts,
        validation={"parity": {**parity, "export_seconds": round(export_s, 2)},
                    **({"training": req.training} if req.training else {})},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        edgekit_version=__version__,
    )
