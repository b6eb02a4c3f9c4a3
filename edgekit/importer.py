"""Import a float-input ONNX classifier made elsewhere (Keras through tf2onnx, a user's own
torch.onnx.export, ...) into a bundle like export's: the camera's uint8 BGR NHWC frame in, logits out.

The model's preprocessing becomes graph nodes in front of it (Cast first: TensorRT takes a uint8
input only into a Cast; then the channel swap, the transpose to NCHW when the model wants it, and
``x * scale + offset``). A trailing Softmax is removed so the bundle outputs logits. Parity: the
imported model on preprocessing computed in numpy against the wrapped model on uint8 frames, both
with ONNX Runtime. Needs onnx and onnxruntime only (cpu tier), no torch.
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
from edgekit.export import PARITY_TOLERANCE, parity_figures  # one parity measure and limit for every bundle
from edgekit.gate import run_all
from edgekit.hashing import sha256_file
from edgekit.images import read_image, sample_images
from edgekit.preprocess import Preprocess, fit_frame, graph_constants
from edgekit.version import __version__

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
JETPACK5_MAX_OPSET = 17  # TensorRT 8.5's and 8.6's parsers
MIN_OPSET = 13  # per-channel DequantizeLinear (the INT8 form's weights)
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


PRESETS = {  # edgekit/cli_import.py describes them for --help; a test keeps the two in step
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


@dataclasses.dataclass(frozen=True)
class _Foreign:
    """What the imported file says about itself."""

    proto: Any
    input_name: str
    input_dims: tuple[int | str | None, ...]  # None: neither size nor name
    output_name: str
    opset: int
    producer: str


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


# ------------------------------------------------------------------ reading the foreign model


def _to_supported_opset(foreign: _Foreign, log: Log) -> _Foreign:
    """The model at an opset every target parses and edgekit's INT8 can use: 13 at least (per-channel
    DequantizeLinear, the INT8 form's weights, is opset 13), 17 at most (TensorRT 8.5 and 8.6, JetPack 5
    and 6.0, parse 17 at most, and read opset 18's ReduceMean without its axes input). The parity check
    that follows compares the converted model with the file as given."""
    target = (MIN_OPSET if foreign.opset < MIN_OPSET else JETPACK5_MAX_OPSET if foreign.opset > JETPACK5_MAX_OPSET
              else None)
    if target is None:
        return foreign
    onnx = require("onnx", "edgekit import")
    version_converter = require("onnx.version_converter", "edgekit import")
    try:
        proto = version_converter.convert_version(foreign.proto, target)
        onnx.checker.check_model(proto)
    except Exception as exc:  # the converter raises bare RuntimeErrors and others per adapter
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        if foreign.opset < MIN_OPSET:
            raise UsageError(f"the model is opset {foreign.opset}; edgekit's INT8 needs opset {MIN_OPSET} or later "
                             f"and ONNX's converter cannot raise it ({why}); re-export it with opset 13 to 17 "
                             "(tf2onnx --opset 17, torch.onnx.export(opset_version=17))") from None
        log(f"note: the model is opset {foreign.opset} and ONNX's converter cannot lower it to "
            f"{JETPACK5_MAX_OPSET} ({why}): TensorRT 8.5/8.6 (JetPack 5, 6.0) cannot parse it; TensorRT 10 can")
        return foreign
    log(f"opset {foreign.opset} converted to {target} (TensorRT 8.5 to 10 parse it; INT8 needs 13 or later); "
        "parity below checks the conversion")
    return dataclasses.replace(foreign, proto=proto, opset=target)


def _load(src: Path) -> _Foreign:
    onnx = require("onnx", "edgekit import")
    if not src.is_file():
        raise UsageError(f"{src} does not exist or is not a file; give the .onnx file of your classifier")
    try:
        proto = onnx.load(str(src))
        onnx.checker.check_model(proto)
        if not proto.graph.node:
            raise ValueError("the graph has no nodes")
    except Exception as exc:  # onnx raises DecodeError, ValidationError and others
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(f"{src} is not a readable ONNX model ({why}); export your classifier to ONNX first "
                         "(torch.onnx.export, tf2onnx, keras2onnx ...)") from None
    g = proto.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        ins = ", ".join(i.name for i in inputs) or "none"
        outs = ", ".join(o.name for o in g.output) or "none"
        raise UsageError(f"{src.name} has {len(inputs)} input(s) ({ins}) and {len(g.output)} output(s) ({outs}); "
                         "edgekit imports classifiers with one image input and one output: re-export it with "
                         "only those")
    inp, out = inputs[0], g.output[0]
    t = inp.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
    if not inp.type.HasField("tensor_type") or t.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4:
        elem = onnx.TensorProto.DataType.Name(t.elem_type).lower() if t.elem_type else "untyped"
        raise UsageError(f"{src.name}'s input {inp.name} is {len(dims)}-D {elem} {_dims(dims)}; edgekit imports "
                         "classifiers whose input is one 4-D float32 image batch (NCHW or NHWC): re-export it "
                         "with such an input and without preprocessing of its own")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    producer = " ".join(p for p in (proto.producer_name, proto.producer_version) if p)
    return _Foreign(proto, inp.name, dims, out.name, opset, _plain(producer))


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


# ------------------------------------------------------------------ the wrapped graph


def _names_in(graph: Any, nodes: bool = True) -> set[str]:
    """Every tensor name in ``graph`` (and ``nodes``: node names too, so new ones are unique)."""
    names = {i.name for i in graph.initializer} | {v.name for v in graph.input} | {v.name for v in graph.output}
    names |= {v.name for v in graph.value_info}
    for n in graph.node:
        names |= set(n.input) | set(n.output) | ({n.name} if nodes else set())
    names.discard("")
    return names


def _rename(graph: Any, names: dict[str, str]) -> None:
    """Rename tensors (old -> new) everywhere in ``graph``, its subgraphs (If/Loop bodies) included."""
    for n in graph.node:
        for i, t in enumerate(n.input):
            if t in names:
                n.input[i] = names[t]
        for i, t in enumerate(n.output):
            if t in names:
                n.output[i] = names[t]
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _rename(sub, names)
    for coll in (graph.input, graph.output, graph.value_info, graph.initializer):
        for v in coll:
            if v.name in names:
                v.name = names[v.name]


def _cache_safe_names(graph: Any, taken: set[str]) -> int:
    """Rename tensors whose names hold ':' (tf2onnx's ``name:0``) or line breaks, which TensorRT's
    calibration cache (``name: hex`` lines) cannot carry; returns how many were renamed."""
    odd = sorted({t for t in _names_in(graph, nodes=False) if ":" in t or "\n" in t or "\r" in t})
    names = {t: _fresh(taken, re.sub(r"[:\r\n]", "_", t)) for t in odd}
    _rename(graph, names)
    return len(names)


def _fresh(taken: set[str], base: str) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _softmax_tail(graph: Any) -> tuple[list[Any], str] | None:
    """(the Softmax and any Identity after it, its input) when the graph output is a Softmax over classes."""
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    tail: list[Any] = []
    node = producer.get(graph.output[0].name)
    while node is not None and node.op_type == "Identity":
        tail.append(node)
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Softmax":
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), None)
    if axis not in (None, 1, -1):  # the output is 2-D: 1 and -1 (and the default of every opset) are the classes
        return None
    tail.append(node)
    if any(readers.get(n.output[0], 0) > (0 if k == 0 else 1) for k, n in enumerate(tail)):
        return None  # something else reads the probabilities
    return tail, node.input[0]


@dataclasses.dataclass(frozen=True)
class Wrapped:
    proto: Any
    softmax_removed: bool
    renamed: int  # tensors renamed for TensorRT's calibration cache


def wrap(model: Any, layout: str, pre: Preprocess, batch: int | None, classes: int) -> Wrapped:
    """The model with the camera frame's preprocessing as graph nodes in front and logits out."""
    onnx = require("onnx", "edgekit import")
    h, nh, tp = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    taken = _names_in(g)
    for reserved in (INPUT_NAME, OUTPUT_NAME):  # the bundle's own names: whatever holds them moves aside
        if reserved in taken:
            _rename(g, {reserved: _fresh(taken, f"{reserved}_imported")})
    inits = {i.name for i in g.initializer}
    inp = next(i for i in g.input if i.name not in inits)
    original_in = inp.name
    model_in = _fresh(taken, "edgekit_model_input")
    _rename(g, {original_in: model_in})

    tail = _softmax_tail(g)
    if tail is not None:
        nodes, logits = tail
        for n in nodes:
            g.node.remove(n)
    else:
        logits = g.output[0].name
    _rename(g, {logits: OUTPUT_NAME})
    for v in [v for v in g.value_info if v.name == OUTPUT_NAME]:
        g.value_info.remove(v)
    b: int | str = batch or "batch"
    g.output[0].CopyFrom(h.make_tensor_value_info(OUTPUT_NAME, tp.FLOAT, [b, classes]))
    renamed = _cache_safe_names(g, taken)

    # the front end, as export writes it: Cast first (the only layer TensorRT feeds uint8 into), the
    # transpose to NCHW when the model wants it, the channel swap, then scale and offset. Transpose
    # before swap, as export: export-deepstream finds the front by that order to give nvinfer's input.
    scale, offset = graph_constants(pre)
    channel = 1 if layout == "NCHW" else 3
    shape = [1, 1, 1, 1]
    shape[channel] = 3
    s_name, o_name = _fresh(taken, "edgekit_pre/scale"), _fresh(taken, "edgekit_pre/offset")
    new_inits = [nh.from_array(scale.reshape(shape), s_name), nh.from_array(offset.reshape(shape), o_name)]
    front: list[Any] = []
    x = _fresh(taken, "edgekit_pre/float")
    front.append(h.make_node("Cast", [INPUT_NAME], [x], name=_fresh(taken, "edgekit_pre/Cast"), to=tp.FLOAT))
    if layout == "NCHW":
        y = _fresh(taken, "edgekit_pre/nchw")
        front.append(h.make_node("Transpose", [x], [y], name=_fresh(taken, "edgekit_pre/Transpose"),
                                 perm=[0, 3, 1, 2]))
        x = y
    if pre.color_order == "RGB":
        order = _fresh(taken, "edgekit_pre/bgr_to_rgb")
        new_inits.append(nh.from_array(np.array([2, 1, 0], np.int64), order))
        y = _fresh(taken, "edgekit_pre/rgb")
        front.append(h.make_node("Gather", [x, order], [y], name=_fresh(taken, "edgekit_pre/Gather"),
                                 axis=channel))
        x = y
    y = _fresh(taken, "edgekit_pre/scaled")
    front.append(h.make_node("Mul", [x, s_name], [y], name=_fresh(taken, "edgekit_pre/Mul")))
    front.append(h.make_node("Add", [y, o_name], [model_in], name=_fresh(taken, "edgekit_pre/Add")))
    body = list(g.node)
    del g.node[:]
    g.node.extend(front + body)
    g.initializer.extend(new_inits)
    inp.CopyFrom(h.make_tensor_value_info(INPUT_NAME, tp.UINT8, [b, pre.height, pre.width, 3]))
    if m.ir_version < 4:  # before IR 4 every initializer is also a graph input
        g.input.extend(h.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in new_inits)
    m.doc_string = "imported by edgekit"
    return Wrapped(m, tail is not None, renamed)


def _save(proto: Any, original: Any, path: Path, log: Log) -> None:
    """Checked as export checks its models (full check, strict shape inference), unless the imported
    model itself fails that: then the structural check, and a note."""
    onnx = require("onnx", "edgekit import")
    errors = (ValueError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError)
    try:
        try:
            onnx.checker.check_model(proto, full_check=True)
        except errors as exc:
            try:
                onnx.checker.check_model(original, full_check=True)
            except errors:
                onnx.checker.check_model(proto)
                log(f"note: the imported model fails ONNX's strict shape inference itself "
                    f"({str(exc).splitlines()[0][:200]}); checked without it")
            else:
                raise
        onnx.save(proto, str(path))
    except errors as exc:
        raise ExportError(f"the wrapped model is not valid ONNX ({str(exc).splitlines()[0][:300]}); no bundle "
                          "written. Please report it with the command you ran and the model's producer") from exc


# ------------------------------------------------------------------ parity


def reference_input(images_bgr: np.ndarray, pre: Preprocess, layout: str) -> np.ndarray:
    """What the imported model was trained on, computed in numpy from model-size uint8 BGR frames:
    colour order, pixels to the range mean/std apply to, (x - mean) / std, layout."""
    x = images_bgr.astype(np.float64)
    if pre.color_order == "RGB":
        x = x[..., ::-1]
    x = x * (pre.input_range / 255.0)
    x = (x - np.asarray(pre.mean, np.float64)) / np.asarray(pre.std, np.float64)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32)


def parity_frames(pre: Preprocess, n_random: int, seed: int = 0) -> np.ndarray:
    """Random uint8 BGR frames plus the real sample photographs fitted as the runtime fits them."""
    rng = np.random.default_rng(seed)
    rand = rng.integers(0, 256, size=(n_random, pre.height, pre.width, 3), dtype=np.uint8)
    photos = [fit_frame(read_image(p), pre) for p in sample_images()]
    return np.concatenate([rand, np.stack(photos)], axis=0)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def check_parity(original: Path, wrapped: Path, layout: str, pre: Preprocess, batch: int | None,
                 softmax_removed: bool, n_random: int = 8) -> dict[str, Any]:
    from edgekit.runners.ort import OrtRunner

    frames = parity_frames(pre, n_random)
    step, static = (batch, True) if batch else (4, False)
    with OrtRunner(original) as r:
        ref = run_all(r, reference_input(frames, pre, layout), step, static).astype(np.float64)
    with OrtRunner(wrapped) as r:
        got = run_all(r, frames, step, static).astype(np.float64)
    if softmax_removed:
        got = softmax(got)
    return {
        **parity_figures(got, ref, n_random),
        "reference": "the imported model on preprocessing computed in numpy (ONNX Runtime)",
        "compared": "probabilities (softmax of the logits; the model's Softmax removed)" if softmax_removed
        else "logits",
    }


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


# ------------------------------------------------------------------ text


def _plain(text: str) -> str:
    """Text from a foreign file, safe to print and to keep in the manifest."""
    from edgekit.redact import redact

    return mf.CONTROL.sub("?", redact(text))[:200]  # a producer string can carry a URL with its password


def _dim(d: int | str | None) -> int | str:
    return d if d is not None else "?"


def _dims(dims: tuple[int | str | None, ...]) -> str:
    return "[" + ", ".join(str(_dim(d)) for d in dims) + "]"


def _vec(v: tuple[float, float, float]) -> str:
    return ",".join(f"{x:g}" for x in v)


__all__ = ["PRESETS", "ImportRequest", "ImportResult", "import_model", "reference_input"]
