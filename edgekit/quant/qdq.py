"""Q/DQ placement for TensorRT, and the implicit-INT8 model that TensorRT < 11 builds from a cache.

Explicit quantization (``model.int8.onnx``), as NVIDIA's TensorRT developer guide recommends
("Q/DQ layer-placement recommendations"):

- a QuantizeLinear/DequantizeLinear pair on the *inputs* of weighted layers (Conv, Gemm,
  MatMul): activations per tensor, symmetric int8 (zero point 0); weights per output channel,
  symmetric, in [-127, 127]; biases stay float;
- no Q/DQ on the outputs of weighted layers: TensorRT fuses the next layer's Q into the
  convolution (with its bias and ReLU) and propagates it across max-pooling and concatenation,
  so the Conv -> Q -> DQ -> Relu -> Q -> DQ chains of a generic quantizer only add a second,
  pre-ReLU rounding that TensorRT never does;
- on a residual Add, Q/DQ on the skip input only, so TensorRT fuses the add into the
  convolution that produces the other input;
- never on the network's output (the logits stay float).

Implicit quantization (TensorRT 8.x with a calibration cache, e.g. DLA): every tensor with a
scale runs in int8. :func:`implicit_int8` writes that as Q/DQ on every calibrated tensor, so
the DLA path can be simulated and gated like the explicit one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from edgekit.deps import require

WEIGHTED = ("Conv", "Gemm", "MatMul")
# element-wise ops with a constant operand that TensorRT folds into the convolution before it
_FOLDABLE = ("Mul", "Div", "Add", "Sub", "BatchNormalization", "Identity")
_FUSED_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh")
QMAX = 127


def scale_of(amax: float) -> float:
    """The int8 scale of an activation; TensorRT needs it positive even for an all-zero tensor."""
    return float(amax) / QMAX if amax > 0 else 1.0 / QMAX


class _Graph:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.inits = {i.name: i for i in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in model.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.order = {n.name: k for k, n in enumerate(model.graph.node)}
        self.outputs = {o.name for o in model.graph.output}

    def is_const(self, name: str) -> bool:
        if name in self.inits:
            return True
        node = self.producer.get(name)
        return node is not None and node.op_type == "Constant"

    def weighted_source(self, tensor: str) -> Any | None:
        """The weighted layer whose output reaches ``tensor`` only through element-wise ops
        with constants (a residual branch's ``conv * scale``), each output used once."""
        seen = 0
        while seen < 8:
            node = self.producer.get(tensor)
            if node is None or len(self.consumers.get(tensor, [])) != 1 or tensor in self.outputs:
                return None
            if node.op_type in WEIGHTED:
                return node
            if node.op_type not in _FOLDABLE:
                return None
            dynamic = [i for i in node.input if i and not self.is_const(i)]
            if len(dynamic) != 1:
                return None
            tensor = dynamic[0]
            seen += 1
        return None


def residual_skips(model: Any, skip_nodes: Iterable[str] = ()) -> dict[str, str]:
    """Residual Add node -> its skip input (the one TensorRT does not fuse into a convolution)."""
    g = _Graph(model)
    ignore = set(skip_nodes)
    out = {}
    for node in model.graph.node:
        if node.op_type != "Add" or node.name in ignore or len(node.input) != 2:
            continue
        a, b = node.input
        if g.is_const(a) or g.is_const(b):
            continue
        sa, sb = g.weighted_source(a), g.weighted_source(b)
        if sa is None and sb is None:
            continue
        if sa is not None and sb is not None:
            # both branches end in a convolution: the later one takes the add; the other is the skip
            out[node.name] = a if g.order[sa.name] < g.order[sb.name] else b
        else:
            out[node.name] = b if sa is not None else a
    return out


def _weight_channel_axis(node: Any, weight: np.ndarray) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return weight.ndim - 1  # MatMul (K, N)


def quantize_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 (round half to even, [-127, 127]) and the scales."""
    moved = np.moveaxis(w.astype(np.float64), axis, 0).reshape(w.shape[axis], -1)
    amax = np.abs(moved).max(axis=1) if moved.size else np.zeros(w.shape[axis])
    scale = np.where(amax > 0, amax / QMAX, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -QMAX, QMAX).astype(np.int8)
    return q, scale


class _Writer:
    """Inserts Q/DQ pairs into a copy of a float model, keeping its nodes in graph order."""

    def __init__(self, model: Any) -> None:
        self.onnx = require("onnx", "INT8 quantization")
        self.model = model
        self.g = _Graph(model)
        self.act: dict[str, str] = {}  # tensor -> its DQ output
        self.pending: dict[str, list[Any]] = {}  # tensor -> Q/DQ nodes to emit once it exists
        self.before: dict[str, list[Any]] = {}  # node name -> weight DQ nodes emitted just before it
        self.inits: list[Any] = []

    def activation(self, tensor: str, amax: float) -> str:
        if tensor in self.act:
            return self.act[tensor]
        h, nh = self.onnx.helper, self.onnx.numpy_helper
        base = tensor.replace("/", "_").strip("_")
        s, z = f"{base}_qscale", f"{base}_qzero"
        self.inits += [nh.from_array(np.array(scale_of(amax), np.float32), s),
                       nh.from_array(np.array(0, np.int8), z)]
        q, dq = f"{tensor}_QuantizeLinear_Output", f"{tensor}_DequantizeLinear_Output"
        self.pending.setdefault(tensor, []).extend([
            h.make_node("QuantizeLinear", [tensor, s, z], [q], name=f"{tensor}_QuantizeLinear"),
            h.make_node("DequantizeLinear", [q, s, z], [dq], name=f"{tensor}_DequantizeLinear")])
        self.act[tensor] = dq
        return dq

    def weight(self, node: Any) -> str | None:
        name = node.input[1]
        init = self.g.inits.get(name)
        if init is None:
            return None
        nh = self.onnx.numpy_helper
        w = nh.to_array(init)
        axis = _weight_channel_axis(node, w)
        q, scale = quantize_weight(w, axis)
        base = f"{node.name}_weight".replace("/", "_").strip("_")
        self.inits += [nh.from_array(q, f"{base}_quantized"), nh.from_array(scale, f"{base}_wscale"),
                       nh.from_array(np.zeros(len(scale), np.int8), f"{base}_wzero")]
        out = f"{base}_DequantizeLinear_Output"
        self.before.setdefault(node.name, []).append(self.onnx.helper.make_node(
            "DequantizeLinear", [f"{base}_quantized", f"{base}_wscale", f"{base}_wzero"], [out],
            name=f"{base}_DequantizeLinear", axis=axis))
        return out

    def finish(self, doc: str) -> Any:
        out = self.model
        nodes: list[Any] = []
        for t in [i.name for i in out.graph.input]:
            nodes.extend(self.pending.pop(t, []))
        for node in out.graph.node:
            nodes.extend(self.before.get(node.name, []))
            nodes.append(node)
            for t in node.output:
                nodes.extend(self.pending.pop(t, []))
        del out.graph.node[:]
        out.graph.node.extend(nodes)
        used = {i for n in nodes for i in n.input}
        keep = [i for i in out.graph.initializer if i.name in used]
        del out.graph.initializer[:]
        out.graph.initializer.extend(keep + self.inits)
        out.doc_string = doc
        return out


def _named_copy(model: Any) -> Any:
    """A copy whose nodes all have unique names (layers are named by node in fallback lists)."""
    onnx = require("onnx", "INT8 quantization")
    work = onnx.ModelProto()
    work.CopyFrom(model)
    seen: set[str] = set()
    for k, node in enumerate(work.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{k}"
        seen.add(node.name)
    return work


POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool")


def float_weights(model: Any) -> int:
    """Store quantized weights as float ``q * s`` behind a QuantizeLinear, in place (for TensorRT
    8.x's parser, which takes no int8 initializer into a DequantizeLinear); returns how many.

    Quantizing ``q * s`` by ``s`` gives ``q`` back exactly, so the engine computes the same.
    """
    onnx = require("onnx", "INT8 quantization")
    nh, h = onnx.numpy_helper, onnx.helper
    g = _Graph(model)
    nodes: list[Any] = []
    changed = 0
    for node in model.graph.node:
        init = g.inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if init is None or init.data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            nodes.append(node)
            continue
        q = nh.to_array(init).astype(np.float64)
        scale = nh.to_array(g.inits[node.input[1]]).astype(np.float64)
        zero = nh.to_array(g.inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 else np.zeros(1)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if scale.size > 1:
            shape[axis] = -1
        w = ((q - zero.reshape(shape)) * scale.reshape(shape)).astype(np.float32)
        base = node.input[0]
        model.graph.initializer.append(nh.from_array(w, f"{base}_float"))
        attrs = {"axis": axis} if scale.size > 1 else {}
        nodes.append(h.make_node("QuantizeLinear", [f"{base}_float", node.input[1], node.input[2]],
                                 [f"{base}_requantized"], name=f"{node.name}_weight_QuantizeLinear", **attrs))
        node.input[0] = f"{base}_requantized"
        nodes.append(node)
        changed += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return changed


def fold_branch_scales(model: Any) -> int:
    """Fold a constant ``Mul`` between a convolution and a residual Add into the convolution
    (Inception-ResNet's ``conv * scale + x``), in place; returns how many were folded.

    TensorRT fuses a residual add into the convolution that produces its other input; a Mul in
    between breaks that pattern. ``(W x + b) * s == (s W) x + s b``: exact up to rounding.
    """
    onnx = require("onnx", "INT8 quantization")
    nh = onnx.numpy_helper
    g = _Graph(model)
    folded = 0
    for add in list(model.graph.node):
        if add.op_type != "Add":
            continue
        for t in add.input:
            mul = g.producer.get(t)
            if mul is None or mul.op_type != "Mul" or len(g.consumers.get(t, [])) != 1 or t in g.outputs:
                continue
            consts = [i for i in mul.input if i in g.inits]
            dynamic = [i for i in mul.input if i not in g.inits]
            if len(consts) != 1 or len(dynamic) != 1:
                continue
            conv = g.producer.get(dynamic[0])
            if conv is None or conv.op_type != "Conv" or len(g.consumers.get(dynamic[0], [])) != 1 \
                    or conv.input[1] not in g.inits:
                continue
            w = nh.to_array(g.inits[conv.input[1]]).astype(np.float64)
            s = nh.to_array(g.inits[consts[0]]).astype(np.float64)
            if s.size == 1:
                s = np.full(w.shape[0], float(s.ravel()[0]))
            elif s.size == w.shape[0] and s.squeeze().ndim == 1:
                s = s.ravel()
            else:
                continue
            new_w = (w * s.reshape([-1] + [1] * (w.ndim - 1))).astype(np.float32)
            g.inits[conv.input[1]].CopyFrom(nh.from_array(new_w, conv.input[1]))
            if len(conv.input) > 2 and conv.input[2] in g.inits:
                b = nh.to_array(g.inits[conv.input[2]]).astype(np.float64)
                g.inits[conv.input[2]].CopyFrom(nh.from_array((b * s).astype(np.float32), conv.input[2]))
            conv.output[0] = mul.output[0]
            model.graph.node.remove(mul)
            folded += 1
    return folded


def tensorrt_qdq(model: Any, amax: dict[str, float], keep_float: Iterable[str] = (),
                 preprocessing: Iterable[str] = (), doc: str = "edgekit int8 (trt)") -> tuple[Any, list[str]]:
    """The explicit-quantization model for TensorRT, and the names of the quantized layers.

    ``keep_float``: layers (node names) left in float, e.g. by ``--fallback auto``. Besides the
    weighted layers and residual skips, pooling inputs are quantized so TensorRT pools in int8,
    and a max-pooled tensor keeps its input's scale (max commutes with rounding): every reader
    of a tensor then wants the same scale, so TensorRT can fuse that Q into the layer producing
    it instead of writing float and running a separate quantize kernel.
    """
    work = _named_copy(model)
    fold_branch_scales(work)
    writer = _Writer(work)
    g = writer.g
    skip = set(keep_float) | set(preprocessing)

    def source(t: str) -> str:
        """Where a tensor's scale comes from: through max-pooling, its input's."""
        node = g.producer.get(t)
        while node is not None and node.op_type == "MaxPool" and node.input[0] in amax:
            t = node.input[0]
            node = g.producer.get(t)
        return t

    quantized: list[str] = []
    rewires: list[tuple[Any, int, str]] = []
    for node in work.graph.node:
        if node.name in skip:
            continue
        x = node.input[0] if node.input else ""
        if not x or x not in amax or g.is_const(x):
            continue
        if node.op_type in WEIGHTED and len(node.input) >= 2 and node.input[1] in g.inits:
            w = writer.weight(node)
            if w is None:
                continue
            rewires += [(node, 0, writer.activation(x, amax[source(x)])), (node, 1, w)]
            quantized.append(node.name)
        elif node.op_type in POOLS:
            rewires.append((node, 0, writer.activation(x, amax[source(x)])))
    by_name = {n.name: n for n in work.graph.node}
    for add, tensor in residual_skips(work, skip).items():
        if tensor in amax:
            node = by_name[add]
            rewires.append((node, list(node.input).index(tensor), writer.activation(tensor, amax[source(tensor)])))
            quantized.append(add)
    for node, index, tensor in rewires:
        node.input[index] = tensor
    return writer.finish(doc), quantized


def implicit_int8(model: Any, amax: dict[str, float], preprocessing: Iterable[str] = (),
                  doc: str = "edgekit implicit int8 (calibration cache)") -> Any:
    """Every calibrated tensor in int8, as TensorRT's implicit quantization runs it from a cache.

    A tensor whose only readers are activations fused into the layer before them (Conv + ReLU)
    is not rounded on its own: TensorRT rounds once, after the activation. Weights of weighted
    layers are quantized per output channel, as TensorRT does in implicit mode.
    """
    work = _named_copy(model)
    writer = _Writer(work)
    g = writer.g
    pre = set(preprocessing)
    rewires: list[tuple[Any, int, str]] = []
    for tensor, a in amax.items():
        readers = g.consumers.get(tensor, [])
        if not readers or tensor in g.outputs or g.is_const(tensor):
            continue
        producer = g.producer.get(tensor)
        if producer is not None and producer.op_type in WEIGHTED and all(
                r.op_type in _FUSED_ACTIVATIONS for r in readers):
            continue
        dq = writer.activation(tensor, a)
        for r in readers:
            if r.name in pre:
                continue
            for k, i in enumerate(r.input):
                if i == tensor:
                    rewires.append((r, k, dq))
    for node in work.graph.node:
        if node.op_type in WEIGHTED and len(node.input) > 1 and node.input[1] in g.inits and node.name not in pre:
            w = writer.weight(node)
            if w is not None:
                rewires.append((node, 1, w))
    for node, index, tensor in rewires:
        node.input[index] = tensor
    return writer.finish(doc)


# ---- the CPU form (ONNX Runtime's QLinear kernels) moved to edgekit.quant.cpu_qdq --------------------

