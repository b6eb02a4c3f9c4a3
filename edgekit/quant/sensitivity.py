"""Which layers lose the most when quantized: the ranking behind ``--fallback auto``.

Two stages, both over all validation images and both continuous (no top-1 flips counted,
so one image changes a figure by a little, never by a step):

1. local error, one pass: each layer is also computed from its fake-quantized input and
   weights, next to its FP32 self; the relative squared error of its output ranks the layers,
   and the worst few (``candidates``) go on;
2. effect on the logits: one model whose every candidate layer can be switched between FP32
   and INT8 by a mask input; for each candidate alone, the mean KL divergence of the
   softmax from FP32's over all validation images. Layers are returned worst first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.callbacks import Log
from edgekit.deps import require
from edgekit.quant import qdq

MASK = "edgekit_layer_mask"
_END = "__edgekit_end__"  # nodes emitted after the last one


def _fake_weight(w: np.ndarray, node: Any) -> np.ndarray:
    axis = qdq._weight_channel_axis(node, w)
    q, scale = qdq.quantize_weight(w, axis)
    shape = [1] * w.ndim
    shape[axis] = -1
    out: np.ndarray = (q.astype(np.float32) * scale.reshape(shape)).astype(np.float32)
    return out


class _Builder:
    def __init__(self, model: Any, amax: dict[str, float]) -> None:
        self.onnx = require("onnx", "INT8 fallback")
        self.model = qdq._named_copy(model)
        self.g = qdq._Graph(self.model)
        self.amax = amax
        self.inits: list[Any] = []
        self.extra: dict[str, list[Any]] = {}  # node name -> nodes emitted before it
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base.replace('/', '_').strip('_')}__fq{self.n}"

    def const(self, base: str, arr: np.ndarray) -> str:
        n = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(arr, n))
        return n

    def fake_quant(self, tensor: str, at: str) -> str:
        h = self.onnx.helper
        s = self.const(tensor + "_s", np.array(qdq.scale_of(self.amax[tensor]), np.float32))
        z = self.const(tensor + "_z", np.array(0, np.int8))
        q, dq = self.name(tensor + "_q"), self.name(tensor + "_dq")
        self.extra.setdefault(at, []).extend([h.make_node("QuantizeLinear", [tensor, s, z], [q], name=q),
                                              h.make_node("DequantizeLinear", [q, s, z], [dq], name=dq)])
        return dq

    def finish(self, outputs: list[Any], extra_inputs: list[Any] | None = None) -> bytes:
        m = self.model
        nodes = []
        for node in m.graph.node:
            nodes.extend(self.extra.get(node.name, []))
            nodes.append(node)
        nodes.extend(self.extra.get(_END, []))
        del m.graph.node[:]
        m.graph.node.extend(nodes)
        m.graph.initializer.extend(self.inits)
        m.graph.input.extend(extra_inputs or [])
        m.graph.output.extend(outputs)
        del m.graph.value_info[:]
        data: bytes = m.SerializeToString()
        return data


def layers_of(model: Any, amax: dict[str, float], exclude: list[str]) -> list[str]:
    """The layers the TensorRT form quantizes (weighted layers and residual skips)."""
    _, layers = qdq.tensorrt_qdq(model, amax, exclude, _pre(model))
    return layers


def _pre(model: Any) -> list[str]:
    from edgekit.quant.activations import preprocessing_nodes

    return preprocessing_nodes(model)


def local_errors(model: Any, amax: dict[str, float], layers: list[str], images: np.ndarray,
                 batch: int, static: bool) -> dict[str, float]:
    """Relative squared output error of each layer quantized alone, on its FP32 input."""
    onnx = require("onnx", "INT8 fallback")
    h = onnx.helper
    b = _Builder(model, amax)
    by_name = {n.name: n for n in b.model.graph.node}
    skips = qdq.residual_skips(b.model)
    outs, names = [], []
    for layer in layers:
        node = by_name[layer]
        if node.op_type in qdq.WEIGHTED:
            w = onnx.numpy_helper.to_array(b.g.inits[node.input[1]])
            inputs = [b.fake_quant(node.input[0], layer), b.const(layer + "_wq", _fake_weight(w, node))]
            inputs += list(node.input[2:])
        elif layer in skips:
            inputs = [b.fake_quant(i, layer) if i == skips[layer] else i for i in node.input]
        else:
            continue
        yq = b.name(layer + "_yq")
        diff, num, den = b.name(layer + "_d"), b.name(layer + "_num"), b.name(layer + "_den")
        attrs = {a.name: h.get_attribute_value(a) for a in node.attribute}
        b.extra.setdefault(layer, []).extend([
            h.make_node(node.op_type, inputs, [yq], name=yq, **attrs),
            h.make_node("Sub", [yq, node.output[0]], [diff], name=diff),
            h.make_node("ReduceSumSquare", [diff], [num], name=num, keepdims=0),
            h.make_node("ReduceSumSquare", [node.output[0]], [den], name=den, keepdims=0)])
        outs += [h.make_tensor_value_info(t, onnx.TensorProto.FLOAT, []) for t in (num, den)]
        names.append((layer, num, den))
    # the error nodes read the layer's output: emit them after the layer, not before it
    for layer, _, _ in names:
        extra = b.extra.pop(layer)
        b.extra.setdefault(_next_node(b.model, layer), []).extend(extra)
    data = b.finish(outs)
    from edgekit.runners.ort import OrtRunner

    totals = {layer: [0.0, 0.0] for layer, _, _ in names}
    with OrtRunner(data) as r:
        wanted = [t for _, num, den in names for t in (num, den)]
        for i in range(0, len(images), batch):
            x = _pad(images[i:i + batch], batch, static)
            got = dict(zip(wanted, r._session.run(wanted, {r.input_name: x})))
            for layer, num, den in names:
                totals[layer][0] += float(got[num])
                totals[layer][1] += float(got[den])
    return {k: (v[0] / v[1] if v[1] > 0 else 0.0) for k, v in totals.items()}


def _next_node(model: Any, name: str) -> str:
    """The node after ``name`` in graph order (a sentinel when it is the last)."""
    nodes = list(model.graph.node)
    for k, n in enumerate(nodes):
        if n.name == name:
            return nodes[k + 1].name if k + 1 < len(nodes) else _END
    return _END


def _pad(x: np.ndarray, batch: int, static: bool) -> np.ndarray:
    if static and len(x) < batch:
        return np.concatenate([x, np.repeat(x[-1:], batch - len(x), 0)])
    return x


def _kl(ref: np.ndarray, got: np.ndarray) -> float:
    def logsoftmax(z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
        out: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return out

    lp, lq = logsoftmax(ref), logsoftmax(got)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1)))


def logit_effects(model: Any, amax: dict[str, float], layers: list[str], images: np.ndarray,
                  ref: np.ndarray, batch: int, static: bool) -> dict[str, float]:
    """Mean KL divergence from FP32's softmax with each layer alone quantized (one session)."""
    onnx = require("onnx", "INT8 fallback")
    h = onnx.helper
    b = _Builder(model, amax)
    by_name = {n.name: n for n in b.model.graph.node}
    skips = qdq.residual_skips(b.model)

    def switch(base: str, k: int, fp: str, fq: str, at: str) -> str:
        m, d, md, out = (b.name(base + s) for s in ("_m", "_d", "_md", "_sw"))
        idx = b.const(base + "_k", np.array([k], np.int64))
        b.extra.setdefault(at, []).extend([
            h.make_node("Gather", [MASK, idx], [m], name=m, axis=0),
            h.make_node("Sub", [fq, fp], [d], name=d),
            h.make_node("Mul", [d, m], [md], name=md),
            h.make_node("Add", [fp, md], [out], name=out)])
        return out

    used = []
    for k, layer in enumerate(layers):
        node = by_name[layer]
        if node.op_type in qdq.WEIGHTED:
            w = onnx.numpy_helper.to_array(b.g.inits[node.input[1]])
            wq = b.const(layer + "_wq", _fake_weight(w, node))
            x = switch(layer + "_x", k, node.input[0], b.fake_quant(node.input[0], layer), layer)
            ww = switch(layer + "_w", k, node.input[1], wq, layer)
            node.input[0], node.input[1] = x, ww
        elif layer in skips:
            t = skips[layer]
            j = list(node.input).index(t)
            node.input[j] = switch(layer + "_s", k, t, b.fake_quant(t, layer), layer)
        else:
            continue
        used.append((k, layer))
    data = b.finish([], [h.make_tensor_value_info(MASK, onnx.TensorProto.FLOAT, [len(layers)])])
    from edgekit.runners.ort import OrtRunner

    effects = {}
    with OrtRunner(data) as r:
        out_name = r.output_names[0]
        for k, layer in used:
            mask = np.zeros(len(layers), np.float32)
            mask[k] = 1.0
            got = []
            for i in range(0, len(images), batch):
                chunk = images[i:i + batch]
                got.append(r._session.run([out_name], {r.input_name: _pad(chunk, batch, static), MASK: mask})[0][
                    :len(chunk)])
            effects[layer] = _kl(ref, np.concatenate(got))
    return effects


def rank(model: Any, amax: dict[str, float], exclude: list[str], images: np.ndarray, ref: np.ndarray,
         batch: int, static: bool, candidates: int, log: Log | None = None) -> list[str]:
    """Quantized layers, most sensitive first (by their effect on the logits)."""
    layers = layers_of(model, amax, exclude)
    local = local_errors(model, amax, layers, images, batch, static)
    short = sorted(local, key=lambda k: -local[k])[:candidates]
    if log:
        log(f"sensitivity: local error of {len(local)} layers on {len(images)} images; "
            f"effect on the logits of the worst {len(short)}")
    effects = logit_effects(model, amax, short, images, ref, batch, static)
    return sorted(effects, key=lambda k: -effects[k])
