"""The INT8 simulation computes what the Q/DQ graph means, exactly, on any CPU.

A small network with the layer kinds of the Inception family (convolutions with bias and
ReLU, max-pooling, concatenation, a scaled residual add, global pooling, a classifier) is
quantized for TensorRT and run three ways: the simulation (ONNX Runtime, rewritten to integer
arithmetic), an independent numpy interpreter of the ONNX Q/DQ semantics in float64, and
ONNX Runtime's own fused kernels.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.quant import activations, cpu_qdq, qdq
from edgekit.quant.quantize import Calibration
from edgekit.quant.simulate import SimRunner, integer_arithmetic


def _net(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def w(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2a", "b2a"], ["c2a"], name="conv2a"),
        helper.make_node("Relu", ["c2a"], ["r2a"], name="relu2a"),
        helper.make_node("Conv", ["p1", "w2b", "b2b"], ["c2b"], name="conv2b", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2b"], ["r2b"], name="relu2b"),
        helper.make_node("Concat", ["r2a", "r2b"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "w3", "b3"], ["c3"], name="conv3"),
        helper.make_node("Mul", ["c3", "res_scale"], ["c3s"], name="scale3"),
        helper.make_node("Add", ["c3s", "cat"], ["res"], name="residual"),
        helper.make_node("Relu", ["res"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "wfc", "bfc"], ["logits"], name="fc", transB=1),
    ]
    inits = [w("w1", 8, 3, 3, 3), w("b1", 8, scale=0.1), w("w2a", 6, 8, 1, 1), w("b2a", 6, scale=0.1),
             w("w2b", 6, 8, 3, 3), w("b2b", 6, scale=0.1), w("w3", 12, 12, 1, 1), w("b3", 12, scale=0.1),
             numpy_helper.from_array(np.array(0.2, np.float32), "res_scale"),
             w("wfc", 10, 12), w("bfc", 10, scale=0.1)]
    g = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


# ---- an independent interpreter of the ONNX semantics, float64 ----------------------------

def _conv(x, w, b, pads=(0, 0, 0, 0)):
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    kh, kw = w.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # N C H W kh kw
    y = np.einsum("nchwij,ocij->nohw", win, w)
    return y + (0 if b is None else b.reshape(1, -1, 1, 1))


def _quantize(x, s, z):
    return np.clip(np.round(x / s) + z, -128 if z.dtype == np.int8 else 0, 127 if z.dtype == np.int8 else 255)


def _reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    env = {i.name: numpy_helper.to_array(i).astype(np.float64) if numpy_helper.to_array(i).dtype.kind == "f"
           else numpy_helper.to_array(i) for i in model.graph.initializer}
    env[model.graph.input[0].name] = x.astype(np.float64)
    for n in model.graph.node:
        a = {at.name: helper.get_attribute_value(at) for at in n.attribute}
        i = [env[k] if k else None for k in n.input]
        if n.op_type == "QuantizeLinear":
            out = _quantize(i[0], i[1], i[2]).astype(i[2].dtype)
        elif n.op_type == "DequantizeLinear":
            s, z = i[1].astype(np.float64), i[2].astype(np.float64)
            if s.ndim == 1 and s.size > 1:
                shape = [1] * i[0].ndim
                shape[a.get("axis", 1)] = -1
                s, z = s.reshape(shape), z.reshape(shape)
            out = (i[0].astype(np.float64) - z) * s
        elif n.op_type == "Conv":
            out = _conv(i[0], i[1], i[2] if len(i) > 2 else None, a.get("pads", (0, 0, 0, 0)))
        elif n.op_type == "Relu":
            out = np.maximum(i[0], 0)
        elif n.op_type == "MaxPool":
            win = np.lib.stride_tricks.sliding_window_view(i[0], (2, 2), axis=(2, 3))[:, :, ::2, ::2]
            out = win.max(axis=(4, 5))
        elif n.op_type == "Concat":
            out = np.concatenate(i, axis=a["axis"])
        elif n.op_type == "Mul":
            out = i[0] * i[1]
        elif n.op_type == "Add":
            out = i[0] + i[1]
        elif n.op_type == "GlobalAveragePool":
            out = i[0].mean(axis=(2, 3), keepdims=True)
        elif n.op_type == "Flatten":
            out = i[0].reshape(len(i[0]), -1)
        elif n.op_type == "Gemm":
            out = i[0] @ (i[1].T if a.get("transB") else i[1]) + i[2]
        else:
            raise AssertionError(f"interpreter lacks {n.op_type}")
        env[n.output[0]] = out
    return env[model.graph.output[0].name]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    m = _net()
    onnx.save(m, str(tmp / "net.onnx"))
    rng = np.random.default_rng(1)
    images = (rng.standard_normal((64, 3, 16, 16)) * 2).astype(np.float32)
    stats = activations.collect(tmp / "net.onnx", images)
    amax = {t: stats.absmax(t) for t in stats.hist}
    q, layers = qdq.tensorrt_qdq(m, amax)
    return m, q, layers, amax, images, stats


def test_simulation_equals_the_float64_interpretation_of_the_qdq_graph(quantized):
    _, q, layers, _, images, _ = quantized
    assert set(layers) == {"conv1", "conv2a", "conv2b", "conv3", "fc", "residual"}
    with SimRunner(q, threads=1) as r:
        sim = r.infer(images)
        assert r.rewritten == 5  # every weighted layer runs as integer arithmetic
    ref = _reference(q, images)
    assert np.array_equal(sim.argmax(1), ref.argmax(1))
    np.testing.assert_allclose(sim, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_simulation_is_bit_identical_whatever_the_threads_and_batching(quantized):
    _, q, _, _, images, _ = quantized
    with SimRunner(q, threads=1) as a, SimRunner(q, threads=2) as b:
        one = a.infer(images)
        two = np.concatenate([b.infer(images[k:k + 5]) for k in range(0, len(images), 5)])
    assert np.array_equal(one, two)


def test_integer_rewrite_leaves_no_dequantized_weight(quantized):
    _, q, _, _, _, _ = quantized
    sim, n = integer_arithmetic(q)
    assert n == 5
    weighted = [n for n in sim.graph.node if n.op_type in ("Conv", "Gemm")]
    producers = {o: n for n in sim.graph.node for o in n.output}
    for node in weighted:
        assert producers[node.input[0]].op_type == "Cast"  # the int8 values themselves
        assert node.input[1] not in producers  # a constant of integer values
        w = numpy_helper.to_array(next(i for i in sim.graph.initializer if i.name == node.input[1]))
        assert np.array_equal(w, np.round(w)) and np.abs(w).max() <= 127


def test_rounding_is_half_to_even_as_tensorrt_rounds():
    """A tensor whose values sit exactly on .5 steps: the simulation rounds 0.5 -> 0, 1.5 -> 2."""
    x = np.array([[0.5, 1.5, 2.5, -0.5, -1.5, 126.5, 127.5, -128.5, -200.0]], np.float32)
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "r",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 9])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    with SimRunner(m) as r:
        y = r.infer(x)
    assert y.tolist() == [[0, 2, 2, -0, -2, 126, 127, -128, -128]]


def test_fused_cpu_kernels_are_not_what_the_gate_measures(quantized):
    """The CPU form through ONNX Runtime's QLinear kernels is what `edgekit run` uses on a CPU;
    the gate judges its arithmetic through the simulation, which the kernels must match where
    they do not saturate (7-bit weights: on every CPU)."""
    from edgekit.runners.ort import OrtRunner

    m, _, _, _, images, stats = quantized
    cal = Calibration("minmax", {t: stats.absmax(t) for t in stats.hist},
                      {t: (stats.lo[t], stats.hi[t]) for t in stats.hist}, len(images), 0.0)
    cpu, _ = cpu_qdq.cpu_qdq(m, cal.ranges)
    with SimRunner(cpu) as s, OrtRunner(cpu.SerializeToString()) as k:
        a, b = s.infer(images), k.infer(images)
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.95
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.999


def test_float_weights_for_tensorrt_8_round_trip_to_the_same_integers(quantized):
    """TensorRT 8.x's parser takes weights as float behind a Q/DQ pair: quantizing them gives
    back exactly the int8 values the gate simulated, and TensorRT's parser reads the result."""
    _, q, _, _, images, _ = quantized
    m = onnx.ModelProto()
    m.CopyFrom(q)
    n = qdq.float_weights(m)
    assert n == 5
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    orig = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    for node in m.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0].endswith("_float"):
            w, s = inits[node.input[0]], inits[node.input[1]]
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * w.ndim
            if s.size > 1:
                shape[axis] = -1
            back = np.clip(np.round(w / s.reshape(shape)), -127, 127).astype(np.int8)
            assert np.array_equal(back, orig[node.input[0][:-len("_float")]])
    int8_inits = {i.name for i in m.graph.initializer if i.data_type == TensorProto.INT8}
    assert not [d for d in m.graph.node if d.op_type == "DequantizeLinear" and d.input[0] in int8_inits]
    from edgekit.runners.ort import OrtRunner

    with OrtRunner(q.SerializeToString(), optimize=False) as a, OrtRunner(m.SerializeToString(), optimize=False) as b:
        np.testing.assert_array_equal(a.infer(images), b.infer(images))
    trt = pytest.importorskip("tensorrt_rtx")
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt.Logger(trt.Logger.ERROR))
    assert parser.parse(m.SerializeToString()), [parser.get_error(i).desc() for i in range(parser.num_errors)]


def test_bf16_storage_rounds_every_tensor_to_nearest_even_on_any_onnxruntime():
    """OpenVINO's bf16 gate: weights and every float tensor rounded to bfloat16 as the CPU's
    conversion rounds (nearest, ties to even). ONNX Runtime before 1.17 casts to bfloat16 by
    truncation, so the simulation must not use Cast: this runs on the floors' ONNX Runtime too."""
    from edgekit.quant.simulate import round_bf16

    rng = np.random.default_rng(3)
    x = (rng.standard_normal(20000) * 100).astype(np.float32)
    u = x.view(np.uint32)
    ties = ((u & 0xFFFF0000) | 0x8000).view(np.float32)  # exactly half-way between two bfloat16 values
    x = np.concatenate([x, ties, np.float32([0.0, -0.0, 1e-39, 3.0e38])])
    bits = round_bf16(x).view(np.uint32)
    assert not (bits & 0xFFFF).any()
    assert (np.abs(round_bf16(x) - x) <= np.abs(x) * 2.0**-8 + 2.0**-134).all()  # half a unit (subnormals: absolute)
    kept_even = round_bf16(ties).view(np.uint32) >> 16
    assert not (kept_even & 1).any()  # ties go to the even neighbour
    g = helper.make_graph([helper.make_node("Mul", ["x", "one"], ["y"], name="mul")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
                          [numpy_helper.from_array(np.float32([1.0 + 2.0**-9]), "one")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    normal = x[:-2]  # the split is exact for normal numbers: not for subnormals (< 1.2e-38, which CPUs
    #                  running bf16 flush to zero anyway) nor beyond 5e33 (x * 65537 overflows), no activation's range
    with SimRunner(m, storage="bf16") as r:
        got = r.infer(normal)
    # the weight 1 + 2**-9 rounds to 1.0 (a tie, to even), so y = x rounded to bfloat16
    np.testing.assert_array_equal(got, round_bf16(normal))
