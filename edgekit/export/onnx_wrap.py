"""The imported ONNX model read and wrapped: the foreign file checked and brought to an opset
every target parses, then the camera frame's preprocessing put in front as graph nodes (Cast,
transpose, channel swap, scale and offset), a trailing Softmax removed, and tensor names made
safe for TensorRT's calibration cache. Needs onnx only."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import manifest as mf
from edgekit.callbacks import Log
from edgekit.deps import require
from edgekit.errors import ExportError, UsageError
from edgekit.preprocess import Preprocess, graph_constants

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
JETPACK5_MAX_OPSET = 17  # TensorRT 8.5's and 8.6's parsers
MIN_OPSET = 13  # per-channel DequantizeLinear (the INT8 form's weights)


@dataclasses.dataclass(frozen=True)
class _Foreign:
    """What the imported file says about itself."""

    proto: Any
    input_name: str
    input_dims: tuple[int | str | None, ...]  # None: neither size nor name
    output_name: str
    opset: int
    producer: str



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



# ------------------------------------------------------------------ text


def _plain(text: str) -> str:
    """Text from a foreign file, safe to print and to keep in the manifest."""
    from edgekit.redact import redact

    return mf.CONTROL.sub("?", redact(text))[:200]  # a producer string can carry a URL with its password


def _dim(d: int | str | None) -> int | str:
    return d if d is not None else "?"


def _dims(dims: tuple[int | str | None, ...]) -> str:
    return "[" + ", ".join(str(_dim(d)) for d in dims) + "]"
