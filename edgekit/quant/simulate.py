"""Run a Q/DQ model with TensorRT's arithmetic, on any CPU (cpu tier).

ONNX Runtime's fused integer kernels are not TensorRT: on x86 CPUs without VNNI its u8 x s8
products are added in pairs into int16 and saturate (vpmaddubsw), so the same model scores
differently on the machine that calibrates it than on the device. TensorRT multiplies int8
by int8 and accumulates in int32, without saturation. This module rewrites every quantized
Conv/Gemm/MatMul (DequantizeLinear on its activation and on its weight) into that
arithmetic, written with float operators whose results are exact:

    acc = Conv(Cast(q_x) - z_x, q_w - z_w)        # integer-valued floats: exact sums < 2**24
    y   = acc * (s_x * s_w[c]) + bias             # TensorRT's per-channel rescale, then bias

Sums of integer-valued float32 values are exact (whatever the summation order, the SIMD
width or the thread count) while they stay below 2**24, which int8 convolutions of
calibrated activations do by a wide margin; QuantizeLinear rounds half to even as TensorRT
does. The rewritten graph runs with ONNX Runtime's graph optimisations off, so no fused
integer kernel of this CPU is ever used: an AVX2, an AVX-512/VNNI and an ARM CPU give the
same figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.deps import require

WEIGHTED = ("Conv", "Gemm", "MatMul")


def _const(model: Any, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            arr: np.ndarray = numpy_helper.to_array(init)
            return arr
    return None


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Rewriter:
    def __init__(self, model: Any) -> None:
        import onnx

        self.onnx = onnx
        self.model = model
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.new_inits: list[Any] = []
        self.cast_cache: dict[str, str] = {}
        self.count = 0

    def _name(self, base: str) -> str:
        self.count += 1
        return f"{base}__sim{self.count}"

    def _init(self, base: str, arr: np.ndarray) -> str:
        name = self._name(base)
        self.new_inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def _value(self, name: str) -> np.ndarray | None:
        """A constant input: an initializer, or the DequantizeLinear of constants (an int32 bias)."""
        arr = _const(self.model, name)
        if arr is not None:
            return arr
        parts = self._dq_parts(name)
        if parts is None:
            return None
        node, scale, zero, axis = parts
        q = _const(self.model, node.input[0])
        if q is None:
            return None
        if scale.size > 1:
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return ((q.astype(np.float64) - zero) * scale).astype(np.float32)

    def _dq_parts(self, tensor: str) -> tuple[Any, np.ndarray, np.ndarray, int] | None:
        """(DequantizeLinear node, scale, zero point, axis) when ``tensor`` comes from one with constant scales."""
        node = self.producer.get(tensor)
        if node is None or node.op_type != "DequantizeLinear":
            return None
        scale = _const(self.model, node.input[1])
        if scale is None:
            return None
        zp = _const(self.model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        zero = np.zeros_like(scale, dtype=np.float64) if zp is None else zp.astype(np.float64)
        return node, scale.astype(np.float64), zero, int(_attr(node, "axis", 1))

    def _integer_activation(self, dq: Any, zp: np.ndarray) -> list[Any]:
        """Cast(q) - z as float: the int8/uint8 values themselves."""
        if dq.output[0] in self.cast_cache:
            return []
        helper = self.onnx.helper
        out = self._name(dq.output[0] + "_int")
        nodes = [helper.make_node("Cast", [dq.input[0]], [out], to=self.onnx.TensorProto.FLOAT, name=out)]
        if np.any(zp != 0):
            shifted = self._name(dq.output[0] + "_int_shift")
            z = self._init(dq.output[0] + "_zp", zp.astype(np.float32))
            nodes.append(helper.make_node("Sub", [out, z], [shifted], name=shifted))
            out = shifted
        self.cast_cache[dq.output[0]] = out
        return nodes

    def rewrite(self, node: Any) -> list[Any] | None:
        """The nodes that replace ``node``, or None when it is not a quantized weighted layer."""
        if node.op_type not in WEIGHTED or len(node.input) < 2:
            return None
        x = self._dq_parts(node.input[0])
        w = self._dq_parts(node.input[1])
        if x is None or w is None:
            return None
        dq_x, s_x, z_x, _ = x
        dq_w, s_w, z_w, axis_w = w
        if s_x.size != 1 or np.any(z_x != z_x.ravel()[0]):
            return None  # per-channel activations: not TensorRT's scheme; left as float ops
        q_w = _const(self.model, dq_w.input[0])
        if q_w is None:
            return None
        helper = self.onnx.helper
        if s_w.size > 1:  # per-channel weights along axis_w
            bshape = [1] * q_w.ndim
            bshape[axis_w] = -1
            w_int = q_w.astype(np.float64) - z_w.reshape(bshape)
        else:
            w_int = q_w.astype(np.float64) - z_w.ravel()[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        alpha = 1.0
        bias: np.ndarray | None = None
        if node.op_type == "Gemm":
            alpha = float(attrs.pop("alpha", 1.0))
            beta = float(attrs.pop("beta", 1.0))
            if len(node.input) > 2 and node.input[2]:
                c = self._value(node.input[2])
                if c is None:
                    return None
                bias = (c.astype(np.float64) * beta).astype(np.float32)
            channel_axis = 0 if attrs.get("transB", 0) else 1
        elif node.op_type == "Conv":
            if len(node.input) > 2 and node.input[2]:
                b = self._value(node.input[2])
                if b is None:
                    return None
                bias = b.astype(np.float32).reshape([1, -1] + [1] * (q_w.ndim - 2))
            channel_axis = 0
        else:  # MatMul: weight (K, N)
            channel_axis = q_w.ndim - 1
        if s_w.size > 1 and axis_w % q_w.ndim != channel_axis:
            return None  # per-channel along the reduced axis cannot be factored out of the sum
        nodes = self._integer_activation(dq_x, z_x)
        x_int = self.cast_cache[dq_x.output[0]]
        w_name = self._init(node.input[1] + "_int", w_int.astype(np.float32))
        acc = self._name(node.output[0] + "_acc")
        nodes.append(helper.make_node(node.op_type, [x_int, w_name], [acc], name=acc, **attrs))
        # the rescale TensorRT applies to the int32 accumulator: s_x * s_w, per output channel
        scale = (s_x.ravel()[0] * s_w.ravel() * alpha).astype(np.float32)
        if scale.size > 1 and node.op_type == "Conv":
            scale = scale.reshape([1, -1] + [1] * (q_w.ndim - 2))
        s_name = self._init(node.output[0] + "_rescale", scale)
        out = node.output[0]
        scaled = self._name(out + "_scaled") if bias is not None else out
        nodes.append(helper.make_node("Mul", [acc, s_name], [scaled], name=scaled))
        if bias is not None:
            b_name = self._init(out + "_bias", bias)
            nodes.append(helper.make_node("Add", [scaled, b_name], [out], name=self._name(out + "_add")))
        return nodes


def _prune(model: Any) -> None:
    """Drop nodes and initializers nothing uses any more (the weights' DequantizeLinear)."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input} | outputs
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def integer_arithmetic(model: Any) -> tuple[Any, int]:
    """A copy of a Q/DQ ``model`` whose quantized weighted layers compute as TensorRT does.

    Returns (model, number of layers rewritten).
    """
    onnx = require("onnx", "INT8 simulation")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rw = _Rewriter(out)
    nodes: list[Any] = []
    rewritten = 0
    for node in out.graph.node:
        repl = rw.rewrite(node)
        if repl is None:
            nodes.append(node)
        else:
            nodes.extend(repl)
            rewritten += 1
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(rw.new_inits)
    _prune(out)
    del out.graph.value_info[:]  # shapes of replaced tensors are re-inferred by ONNX Runtime
    return out, rewritten


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32: what a
    CPU's bf16 conversion (vcvtneps2bf16) gives; NaN and inf stay as they are."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)
    out: np.ndarray = np.where(np.isfinite(x), r, x)
    return out


STORAGE = ("fp16", "bf16")


def fp16_storage(model: Any, storage: str = "fp16") -> Any:
    """FP32 ``model`` as a reduced-precision engine computes it: every weight and every float
    tensor rounded to ``storage`` (float16: TensorRT's FP16 kernels; bfloat16: OpenVINO's bf16 on
    a CPU with AVX512-BF16 or AMX), arithmetic inside each layer in float32 (both accumulate in
    float32). Run without fused kernels it gives the same answer on any CPU, where ONNX Runtime's
    own float16 kernels differ by CPU (native on ARM64 and AVX512-FP16, casts elsewhere) and
    bf16 hardware exists on few. bf16 rounding of tensors is done with exact float32 operations
    (round to nearest, ties to even, as the CPU's conversion does) for normal numbers; subnormals
    (below 1.2e-38, flushed to zero by CPUs running bf16) may land one step off, and values above
    5e33, far beyond any activation, would become NaN."""
    onnx = require("onnx", f"{storage.upper()} simulation")
    if storage not in STORAGE:
        raise ValueError(f"storage {storage!r} is not one of {STORAGE}")
    nh, h, tp = onnx.numpy_helper, onnx.helper, onnx.TensorProto
    narrow, to_type = ((lambda a: a.astype(np.float16).astype(np.float32)), tp.FLOAT16) if storage == "fp16" \
        else (round_bf16, None)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(out)
    typed = list(inferred.graph.value_info) + list(inferred.graph.output)
    types = {v.name: v.type.tensor_type.elem_type for v in typed}
    for init in out.graph.initializer:
        if init.data_type == tp.FLOAT:
            init.CopyFrom(nh.from_array(narrow(nh.to_array(init)), init.name))
    if storage == "bf16":  # Veltkamp's split: c = x * (2**16 + 1); x rounded to 8 significant bits = c - (c - x)
        out.graph.initializer.append(nh.from_array(np.array(65537.0, np.float32), "__bf16_split"))
    nodes: list[Any] = []
    for node in out.graph.node:
        nodes.append(node)
        for k, t in enumerate(node.output):
            if not t or types.get(t) != tp.FLOAT:
                continue
            raw, half = f"{t}__f32", f"{t}__{storage}"
            node.output[k] = raw
            if storage == "fp16":
                nodes += [h.make_node("Cast", [raw], [half], to=to_type, name=f"{t}__to_{storage}"),
                          h.make_node("Cast", [half], [t], to=tp.FLOAT, name=f"{t}__to_f32")]
            else:  # float operations, not Cast: ONNX Runtime before 1.17 casts to bfloat16 by truncation
                nodes += [h.make_node("Mul", [raw, "__bf16_split"], [f"{t}__c"], name=f"{t}__bf16_c"),
                          h.make_node("Sub", [f"{t}__c", raw], [f"{t}__d"], name=f"{t}__bf16_d"),
                          h.make_node("Sub", [f"{t}__c", f"{t}__d"], [t], name=f"{t}__to_bf16")]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    del out.graph.value_info[:]
    return out


class SimRunner:
    """A runner (``infer``) over a Q/DQ model simulated with TensorRT's arithmetic."""

    backend = "simulation"

    def __init__(self, path: str | Path | Any, threads: int | None = None, fp16: bool = False,
                 storage: str | None = None) -> None:
        """``path``: a Q/DQ model (file or ModelProto); ``fp16=True`` (or ``storage="fp16"`` or
        ``"bf16"``): an FP32 model run with that storage (:func:`fp16_storage`) instead."""
        onnx = require("onnx", "INT8 simulation")
        from edgekit.runners.ort import OrtRunner

        model = onnx.load(str(path)) if isinstance(path, (str, Path)) else path
        storage = storage or ("fp16" if fp16 else None)
        if storage:
            sim, self.rewritten = fp16_storage(model, storage), 0
        else:
            sim, self.rewritten = integer_arithmetic(model)
        self._runner = OrtRunner(sim.SerializeToString(), threads=threads, optimize=False)
        self.input_name = self._runner.input_name
        self.description = f"TensorRT arithmetic simulated on {self._runner.description}"

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        return self._runner.infer(inputs)

    def close(self) -> None:
        self._runner.close()

    def __enter__(self) -> SimRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
