"""The CPU INT8 form (``model.int8-cpu.onnx``): Q/DQ placed where ONNX Runtime fuses them into QLinear kernels.

Split from edgekit.quant.qdq (the TensorRT placement), whose graph helpers it shares.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from edgekit.deps import require
from edgekit.quant.qdq import WEIGHTED, _Graph, _named_copy, _weight_channel_axis

CPU_OPS = ("Conv", "Gemm", "MatMul", "Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat")
CPU_WEIGHT_QMAX = 64  # 7-bit weights ("reduce_range"): u8 x s7 pairs cannot saturate int16 (2*255*64 < 32768)


def uint8_params(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of an asymmetric uint8 tensor whose range includes 0."""
    rmin, rmax = min(lo, 0.0), max(hi, 0.0)
    if rmax <= rmin:
        return 1.0, 0
    scale = (rmax - rmin) / 255.0
    return float(np.float32(scale)), int(np.clip(round(-rmin / scale), 0, 255))


def cpu_qdq(model: Any, ranges: dict[str, tuple[float, float]], keep_float: Iterable[str] = (),
            preprocessing: Iterable[str] = (), doc: str = "edgekit int8 (cpu)",
            weight_qmax: int = CPU_WEIGHT_QMAX) -> tuple[Any, list[str]]:
    """The Q/DQ model for ONNX Runtime on CPUs, and the names of the quantized layers.

    The placement ONNX Runtime fuses into QLinear kernels: Q/DQ on every input and output of
    the ops in ``CPU_OPS``; uint8 activations (asymmetric, from the calibrated min/max);
    int8 weights per output channel, symmetric, 7-bit; int32 biases; a ReLU right after a
    convolution folded into the convolution's uint8 output (zero point 0 clamps negatives);
    max-pooling keeps its input's scale (it commutes with rounding). The logits stay float.
    ``weight_qmax=127`` gives 8-bit weights (for comparison: they saturate on x86 without VNNI).
    """
    onnx = require("onnx", "INT8 quantization")
    h, nh = onnx.helper, onnx.numpy_helper
    work = _named_copy(model)
    g = _Graph(work)
    skip = set(keep_float) | set(preprocessing)
    layers = [n for n in work.graph.node if n.op_type in CPU_OPS and n.name not in skip]
    # a Conv/Gemm whose only reader is a ReLU: the ReLU is dropped and its range used for the output
    folded: dict[str, Any] = {}  # conv output -> relu node
    for n in layers:
        if n.op_type in ("Conv", "Gemm") and n.output[0] not in g.outputs:
            readers = g.consumers.get(n.output[0], [])
            if len(readers) == 1 and readers[0].op_type == "Relu" and readers[0].output[0] in ranges:
                folded[n.output[0]] = readers[0]
    params: dict[str, tuple[float, int]] = {}
    relu_of = {r.output[0]: t for t, r in folded.items()}
    # a layer kept in float reads float inputs: no producer may round them either
    float_only = {i for n in work.graph.node if n.name in set(keep_float) for i in n.input}

    def want(tensor: str, like: str | None = None) -> None:
        if tensor in params or tensor in g.outputs or g.is_const(tensor) or tensor not in ranges:
            return
        if tensor in float_only or (tensor in folded and folded[tensor].output[0] in float_only):
            return
        if relu_of.get(tensor) in params:
            return  # a folded ReLU's output: already the convolution's uint8 output
        if like is not None and like in params:
            params[tensor] = params[like]
        elif tensor in folded:
            params[tensor] = uint8_params(0.0, ranges[folded[tensor].output[0]][1])
        else:
            params[tensor] = uint8_params(*ranges[tensor])

    quantized = []
    for n in layers:
        acts = [i for i in (n.input[:1] if n.op_type in WEIGHTED else n.input) if i and not g.is_const(i)]
        if not acts or any(a not in ranges or a in float_only for a in acts):
            continue
        if n.op_type in WEIGHTED and (len(n.input) < 2 or n.input[1] not in g.inits):
            continue
        for a in acts:
            want(a)
        want(n.output[0], like=acts[0] if n.op_type == "MaxPool" else None)
        quantized.append(n.name)
    inits: list[Any] = []
    after: dict[str, list[Any]] = {}  # tensor -> Q/DQ to emit once it exists
    before: dict[str, list[Any]] = {}  # node -> weight/bias DQ emitted just before it
    renamed: dict[str, str] = {}  # float tensor -> its DQ output
    for t, (scale, zp) in params.items():
        base = t.replace("/", "_").strip("_")
        s, z = f"{base}_qscale", f"{base}_qzero"
        inits += [nh.from_array(np.array(scale, np.float32), s), nh.from_array(np.array(zp, np.uint8), z)]
        dq_out = folded[t].output[0] if t in folded else f"{t}_DequantizeLinear_Output"
        q_out = f"{t}_QuantizeLinear_Output"
        after[t] = [h.make_node("QuantizeLinear", [t, s, z], [q_out], name=f"{t}_QuantizeLinear"),
                    h.make_node("DequantizeLinear", [q_out, s, z], [dq_out],
                                name=f"{t}_DequantizeLinear")]
        if t not in folded:
            renamed[t] = dq_out
    by_name = {n.name: n for n in work.graph.node}
    for name in quantized:
        n = by_name[name]
        if n.op_type not in WEIGHTED:
            continue
        w = nh.to_array(g.inits[n.input[1]])
        axis = _weight_channel_axis(n, w)
        moved = np.moveaxis(w.astype(np.float64), axis, 0).reshape(w.shape[axis], -1)
        amax = np.abs(moved).max(axis=1)
        ws = np.where(amax > 0, amax / weight_qmax, 1.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        qw = np.clip(np.round(w / ws.reshape(shape)), -weight_qmax, weight_qmax).astype(np.int8)
        base = f"{name}_weight".replace("/", "_").strip("_")
        inits += [nh.from_array(qw, f"{base}_quantized"), nh.from_array(ws, f"{base}_wscale"),
                  nh.from_array(np.zeros(len(ws), np.int8), f"{base}_wzero")]
        dqs = [h.make_node("DequantizeLinear", [f"{base}_quantized", f"{base}_wscale", f"{base}_wzero"],
                           [f"{base}_DequantizeLinear_Output"], name=f"{base}_DequantizeLinear", axis=axis)]
        n.input[1] = f"{base}_DequantizeLinear_Output"
        if len(n.input) > 2 and n.input[2] in g.inits:
            b = nh.to_array(g.inits[n.input[2]]).astype(np.float64).ravel()
            x = n.input[0]
            bs = (np.float64(params[x if x in params else relu_of[x]][0]) * ws.astype(np.float64)).astype(np.float32)
            if b.size == bs.size:
                qb = np.round(b / bs.astype(np.float64)).astype(np.int32)
                bb = f"{name}_bias".replace("/", "_").strip("_")
                inits += [nh.from_array(qb, f"{bb}_quantized"), nh.from_array(bs, f"{bb}_bscale"),
                          nh.from_array(np.zeros(len(bs), np.int32), f"{bb}_bzero")]
                dqs.append(h.make_node("DequantizeLinear", [f"{bb}_quantized", f"{bb}_bscale", f"{bb}_bzero"],
                                       [f"{bb}_DequantizeLinear_Output"], name=f"{bb}_DequantizeLinear", axis=0))
                n.input[2] = f"{bb}_DequantizeLinear_Output"
        before[name] = dqs
    dropped = {r.name for t, r in folded.items() if t in params}
    nodes: list[Any] = []
    for t in [i.name for i in work.graph.input]:
        nodes.extend(after.pop(t, []))
    for n in work.graph.node:
        if n.name in dropped:
            continue
        for k, i in enumerate(n.input):
            if i in renamed:
                n.input[k] = renamed[i]
        nodes.extend(before.get(n.name, []))
        nodes.append(n)
        for t in n.output:
            nodes.extend(after.pop(t, []))
    del work.graph.node[:]
    work.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    keep = [i for i in work.graph.initializer if i.name in used]
    del work.graph.initializer[:]
    work.graph.initializer.extend(keep + inits)
    del work.graph.value_info[:]
    work.doc_string = doc
    return work, quantized
