"""`edgekit export-deepstream`: a bundle as a Gst-nvinfer classifier for DeepStream pipelines.

nvinfer scales and converts frames itself and feeds the network float planar (NCHW) data,
``y = net-scale-factor * (x - offsets[c])`` on 0..255 pixels in ``model-color-format``
order. A bundle's ONNX takes uint8 NHWC frames and does that work in its graph, so the
export rewrites the graph's front: a float NCHW input in the model's colour order. Where the
normalisation is one scale for all channels, nvinfer does it (net-scale-factor, offsets) and
the graph's Mul/Add go too; with per-channel std (torchvision's ImageNet models) it cannot
be expressed by one scale factor, so the normalisation stays folded in the graph and nvinfer
passes pixels through (scale 1, offsets 0).

Keys and values follow DeepStream's Gst-nvinfer documentation and its property parser
(``gstnvinfer_property_parser.h``), checked by edgekit.deploy.nvinfer's ``validate_*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit import profiles as prof_mod
from edgekit.deploy.nvinfer import (
    ini,
    validate_app,
    validate_nvinfer,
)
from edgekit.deps import require
from edgekit.errors import UsageError
from edgekit.preprocess import graph_constants

NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}


def onnx_file_name(model: str, qdq: bool) -> str:
    """The ONNX file is named by what it is, not by the engine's precision: the float graph (FP32
    weights) serves FP32, FP16 and implicit INT8 (DLA), as network-mode chooses; only the Q/DQ graph
    is INT8 itself."""
    return f"{model}.int8-qdq.onnx" if qdq else f"{model}.float.onnx"


def precision_note(onnx_name: str, precision: str, dla: int | None) -> str:
    """One line: the ONNX file and the engine nvinfer builds from it, so the two never seem to disagree."""
    mode = f"network-mode {NETWORK_MODE[precision]}"
    if precision == "int8" and dla is None:
        return f"{onnx_name} is the Q/DQ INT8 graph (its scales inside); nvinfer builds it as INT8 ({mode})"
    what = f"{onnx_name} is the FP32 graph; nvinfer builds it as {precision.upper()} ({mode})"
    if precision == "int8":
        what += " with calibration.cache's scales"
    return what + (f" on DLA core {dla}" if dla is not None else "")


SOURCE_TYPES = {"v4l2": 1, "uri": 2, "multiuri": 3, "rtsp": 4, "csi": 5}
SINK_TYPES = {"fake": 1, "egl": 2, "file": 3}


@dataclass(frozen=True)
class DeepStreamRequest:
    bundle: Path
    out: Path
    precision: str | None = None  # fp32, fp16, int8; None: the profile's default if the bundle has it
    profile: str | None = None  # DLA settings and default precision; None: detect
    dla: int | None = None
    batch: int | None = None  # None: the number of sources
    sources: int = 4
    source: str = "file:///opt/nvidia/deepstream/deepstream/samples/streams/sample_720p.mp4"
    threshold: float = 0.0
    force: bool = False
    trt_version: str | None = None  # the target DeepStream's TensorRT (cache header, weights); None: the profile's


@dataclass(frozen=True)
class DeepStreamExport:
    out: Path
    files: tuple[str, ...]
    normalisation: str  # "nvinfer" or "graph"
    network_mode: int
    note: str = ""  # one line: what the ONNX file is and what nvinfer builds from it (the CLI prints it)


# ------------------------------------------------------------------ the ONNX front


PROBS = "probabilities"


def float_front(model: Any, drop_normalisation: bool, name: str = "input") -> tuple[Any, bool]:
    """Replace the uint8 NHWC front (Cast, Transpose, channel Gather) by a float NCHW input, and
    end in a Softmax: nvinfer's classifier parser takes the best class above classifier-threshold,
    so it needs probabilities, not logits.

    Returns (model, normalisation removed?).
    """
    onnx = require("onnx", "rewriting ONNX for DeepStream")
    from onnx import TensorProto, helper

    g = model.graph
    old_in = g.input[0]
    if old_in.type.tensor_type.elem_type != TensorProto.UINT8:
        raise UsageError("this bundle's model already takes float input; nvinfer can feed it as is "
                         "(re-export without --float-input is not needed)")
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # walk the layout prefix: Cast -> Transpose -> [Gather] (export, and imports of NCHW models), or
    # Cast -> [Gather] (imports of NHWC models, e.g. Keras through tf2onnx: no Transpose of ours)
    tensor = old_in.name
    prefix = []
    for op in ("Cast", "Transpose", "Gather"):
        nxt = consumers.get(tensor, [])
        if len(nxt) == 1 and nxt[0].op_type == op:
            prefix.append(nxt[0])
            tensor = nxt[0].output[0]
        elif op == "Cast":
            raise UsageError(f"unexpected graph front (Cast missing after {tensor}); re-export the bundle with "
                             "this edgekit version")
    nhwc = not any(n.op_type == "Transpose" for n in prefix)
    removed_norm = False
    if drop_normalisation:
        # the normalisation: Mul then Add by constants (a Mul by 1 may have been simplified away)
        for op in ("Mul", "Add"):
            nxt = consumers.get(tensor, [])
            if len(nxt) == 1 and nxt[0].op_type == op:
                tensor = nxt[0].output[0]
                removed_norm = True
    dims = [d for d in old_in.type.tensor_type.shape.dim]
    batch = dims[0].dim_param or dims[0].dim_value
    h, w, c = (d.dim_value for d in dims[1:])
    new_in = helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, c, h, w])
    feed = name
    if nhwc:
        # nvinfer fills NCHW planes (network-input-order 0, its common path); the model wants NHWC:
        # one Transpose of ours in front, which TensorRT folds into its input reformat
        feed = f"{name}_nhwc"
    for n in g.node:
        for k, i in enumerate(n.input):
            if i == tensor:
                n.input[k] = feed
    if nhwc:
        g.node.insert(0, helper.make_node("Transpose", [name], [feed], perm=[0, 2, 3, 1], name="edgekit_to_nhwc"))
    g.input.remove(old_in)
    g.input.insert(0, new_in)
    # drop nodes no output depends on any more (the old front)
    needed = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(n.input)
    dead = [n for n in g.node if n not in keep]
    for n in dead:
        g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(init)
    for vi in [v for v in g.value_info if v.name not in used and v.name not in {o.name for o in g.output}]:
        g.value_info.remove(vi)
    logits = g.output[0]
    g.node.append(helper.make_node("Softmax", [logits.name], [PROBS], axis=1, name="edgekit_softmax"))
    dims_out = [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim]
    g.output.remove(logits)
    g.output.insert(0, helper.make_tensor_value_info(PROBS, TensorProto.FLOAT, dims_out))
    onnx.checker.check_model(model)
    return model, removed_norm


def labels_line(labels: list[str]) -> str:
    """nvinfer's classifier label file: one line per output layer, labels separated by ';'."""
    clean = [lb.replace(";", ",").strip() or f"class_{i}" for i, lb in enumerate(labels)]
    return ";".join(clean) + "\n"


# ------------------------------------------------------------------ the export


def input_amax(scale: np.ndarray, offset: np.ndarray, removed: bool) -> float:
    """max |network input| over pixels 0..255: nvinfer's normalised values when it normalises
    (``scale * x + offset`` per channel, the graph's own constants), else the pixels themselves."""
    if not removed:
        return 255.0
    s, o = np.asarray(scale, np.float64), np.asarray(offset, np.float64)
    return float(np.abs(np.stack([o, 255.0 * s + o])).max())


def target_trt_version(req: DeepStreamRequest, profile: prof_mod.Profile, needed: bool = False) -> str | None:
    """The TensorRT of the DeepStream that will build the engine: --trt-version, else the one the
    profile lists when it lists one; None when unknown. ``needed`` (the DLA's implicit INT8 reads
    the calibration cache, which TensorRT ignores when written for another version): a profile
    naming several TensorRT versions is an error without --trt-version."""
    if req.trt_version:
        return req.trt_version
    versions = sorted({s.tensorrt for s in profile.software})
    if len(versions) == 1:
        return versions[0]
    if needed and versions:
        raise UsageError(f"{profile.name} runs TensorRT {', '.join(versions)} (by JetPack), and TensorRT ignores a "
                         "calibration cache written for another version: give --trt-version (on the device: "
                         "dpkg -l | grep nvinfer)")
    return None


def static_batch(model: Any, n: int) -> None:
    """Fix the batch dimension of the graph's inputs and outputs at ``n`` (DLA takes no dynamic
    shapes: nvinfer would build a 1..n profile and the layers would fall back to the GPU)."""
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_value = n  # clears a symbolic dim_param
    del model.graph.value_info[:]  # inner shapes with the symbolic batch: re-inferred by the parser


def export_deepstream(req: DeepStreamRequest, log: Any = lambda _: None) -> DeepStreamExport:
    onnx = require("onnx", "rewriting ONNX for DeepStream")
    man = mf.read(req.bundle)
    profile = prof_mod.get(req.profile) if req.profile else prof_mod.detect()[0]
    precision = req.precision or (profile.default_precision if profile.kind != "cpu" else "fp16")
    if req.precision is None and precision == "int8" and man.artifact("onnx", "int8") is None:
        log(f"note: {req.bundle} is not calibrated, so FP16 rather than the profile's INT8 "
            f"(edgekit calibrate {req.bundle} for INT8)")
        precision = "fp16"
    if precision not in NETWORK_MODE:
        raise UsageError(f"DeepStream runs fp32, fp16 or int8, not {precision!r}")
    if req.sources < 1:
        raise UsageError(f"--sources must be at least 1, got {req.sources}")
    batch = req.batch or req.sources
    if req.dla is not None or profile.kind != "cpu":
        prof_mod.check_request(profile, precision, req.dla,
                               prof_mod.Batch(batch, batch, batch) if req.dla is not None else None)
    implicit = precision == "int8" and req.dla is not None
    target = target_trt_version(req, profile, needed=implicit)
    onnx_prec = "int8" if precision == "int8" and not implicit else "fp32"
    art = man.artifact("onnx", onnx_prec)
    if art is None:
        raise UsageError(f"{req.bundle} has no {onnx_prec} ONNX model, which DeepStream {precision} needs; "
                         f"run edgekit calibrate {req.bundle}")
    scale, offset = graph_constants(man.preprocess)
    uniform = bool(np.allclose(scale, scale[0], rtol=1e-6))
    model = onnx.load(str(bundle_mod.artifact_path(req.bundle, art)))
    model, removed = float_front(model, drop_normalisation=uniform)
    if onnx_prec == "int8" and not (target and int(target.split(".")[0]) >= 10):
        from edgekit.quant.qdq import float_weights

        float_weights(model)  # TensorRT 8.x's parser takes no int8 weight initializers (DeepStream 6.x)
    if req.dla is not None:
        static_batch(model, batch)
    labels = bundle_mod.read_labels(req.bundle, man)
    h, w = man.preprocess.height, man.preprocess.width
    with bundle_mod.staging(req.out, req.force, mark="deepstream_app_config.txt") as tmp:
        onnx_name = onnx_file_name(man.model.name, qdq=onnx_prec == "int8")
        note = precision_note(onnx_name, precision, req.dla)
        onnx.save(model, str(bundle_mod.child(tmp, onnx_name, "ONNX file name")))
        (tmp / "labels.txt").write_text(labels_line(labels), encoding="utf-8")
        prop: dict[str, Any] = {
            "gpu-id": 0,
            "net-scale-factor": f"{float(scale[0]):.10g}" if removed else 1.0,
            "offsets": ";".join(f"{float(-o / scale[0]):.6g}" for o in offset) if removed else "0;0;0",
            "model-color-format": 0 if man.preprocess.color_order == "RGB" else 1,
            "infer-dims": f"3;{h};{w}",
            "network-input-order": 0,
            "onnx-file": onnx_name,
            # the name nvinfer gives the engine it builds beside the ONNX, so later starts reuse it
            "model-engine-file": f"{onnx_name}_b{batch}_{'dla' + str(req.dla) if req.dla is not None else 'gpu0'}"
                                 f"_{precision}.engine",
            "labelfile-path": "labels.txt",
            "batch-size": batch,
            "network-mode": NETWORK_MODE[precision],
            "network-type": 1,
            "process-mode": 1,  # primary: whole frames
            "gie-unique-id": 1,
            "classifier-threshold": req.threshold,
            "output-blob-names": PROBS,
            "maintain-aspect-ratio": 0,
            "workspace-size": profile.workspace_mib,
        }
        files = [onnx_name, "labels.txt", "config_infer_primary.txt", "deepstream_app_config.txt", "README.txt"]
        if precision == "int8":
            # nvinfer sets TensorRT's INT8 flag only when it has a calibration file (else it builds FP16);
            # with the Q/DQ model TensorRT takes the scales from the graph and ignores the cache
            from edgekit.quant import calibcache

            cart = next((a for a in man.artifacts if a.path == "calibration.cache"), None)
            if cart is None:
                raise UsageError(f"{req.bundle} has no calibration.cache, which nvinfer's INT8 needs; "
                                 "run edgekit calibrate")
            cache = calibcache.loads(bundle_mod.artifact_text(req.bundle, cart), f"{req.bundle}/{cart.path}")
            scales = dict(cache.scales)
            # the new tensors' ranges are known exactly: probabilities 0..1 out, and in either
            # pixels 0..255 (normalisation in the graph) or what nvinfer makes of them (its
            # y = net-scale-factor * (x - offset) over x in 0..255, per channel)
            scales["input"] = input_amax(scale, offset, removed) / 127.0
            scales[PROBS] = 1.0 / 127.0
            # TensorRT ignores a cache written for another version: the header names the target's
            version = calibcache.trt_version_number(target) if target else cache.version
            (tmp / "calibration.cache").write_text(calibcache.dumps(
                calibcache.CalibrationCache(version, cache.algorithm, scales)), encoding="utf-8")
            prop["int8-calib-file"] = "calibration.cache"
            files.append("calibration.cache")
        if req.dla is not None:
            prop.update({"enable-dla": 1, "use-dla-core": req.dla})
        where = "nvinfer (one scale for all channels)" if removed else "in the ONNX graph (per-channel std)"
        header = (f"Gst-nvinfer config for {man.model.name} ({precision}), written by edgekit from {req.bundle}.\n"
                  f"Preprocessing: {where}.\n{note}."
                  "\nDeepStream builds the engine on first start and reuses model-engine-file afterwards.")
        infer_text = ini([("property", prop)], header)
        validate_nvinfer(infer_text, tmp)
        (tmp / "config_infer_primary.txt").write_text(infer_text, encoding="utf-8")
        app_text = app_config(req, batch, profile)
        validate_app(app_text)
        (tmp / "deepstream_app_config.txt").write_text(app_text, encoding="utf-8")
        (tmp / "README.txt").write_text(
            f"{man.model.name} for DeepStream, {precision}, batch {batch}, {req.sources} sources.\n{note}.\n\n"
            "Run (on the Jetson or a DeepStream container):\n"
            "  deepstream-app -c deepstream_app_config.txt\n\n"
            "Or in your own pipeline: nvinfer config-file-path=config_infer_primary.txt\n"
            "Edit [source*] uri= for your cameras (type=1 V4L2, type=5 CSI, type=4 RTSP).\n", encoding="utf-8")
    log(f"wrote {req.out}: {', '.join(files)}")
    return DeepStreamExport(req.out, tuple(files), "nvinfer" if removed else "graph", NETWORK_MODE[precision], note)


def app_config(req: DeepStreamRequest, batch: int, profile: prof_mod.Profile) -> str:
    cam = profile.camera
    groups: list[tuple[str, dict[str, Any]]] = [
        ("application", {"enable-perf-measurement": 1, "perf-measurement-interval-sec": 5}),
        ("tiled-display", {"enable": 1, "rows": int(np.ceil(np.sqrt(req.sources))),
                           "columns": int(np.ceil(req.sources / np.ceil(np.sqrt(req.sources)))),
                           "width": 1280, "height": 720}),
    ]
    for i in range(req.sources):
        groups.append((f"source{i}", {"enable": 1, "type": SOURCE_TYPES["uri"], "uri": req.source, "gpu-id": 0}))
    groups += [
        ("streammux", {"gpu-id": 0, "live-source": 0, "batch-size": batch, "batched-push-timeout": 40000,
                       "width": cam.width, "height": cam.height}),
        ("primary-gie", {"enable": 1, "gpu-id": 0, "batch-size": batch, "gie-unique-id": 1,
                         "config-file": "config_infer_primary.txt"}),
        ("osd", {"enable": 1, "border-width": 2, "text-size": 15}),
        ("sink0", {"enable": 1, "type": SINK_TYPES["egl"], "sync": 0}),
        ("tests", {"file-loop": 1}),
    ]
    return ini(groups, f"deepstream-app: {req.sources} sources batched through the classifier.\n"
                       "Sources: type=2 URI; use type=1 (camera-v4l2-dev-node) or type=5 (camera-csi-sensor-id) "
                       "for cameras.")
