"""Every zoo model quantizes, and builds with TensorRT-RTX on the CPU at FP32, FP16 and INT8,
with an optimisation profile, through `edgekit build`'s own code path."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("torch")

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from edgekit import manifest as mf  # noqa: E402
from edgekit.profiles import Batch  # noqa: E402
from edgekit.quant import quantize  # noqa: E402
from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle  # noqa: E402
from edgekit.trt.engine import EngineRequest, build  # noqa: E402

ALL = ["googlenet", "bn_inception", "inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2"]
# The 299 px models at 139 px: the same layers, Q/DQ placement and engines, a fifth of the arithmetic to calibrate
# and simulate (their defaults cost 3 of make test's 20 minutes here)
SIZE = {m: {"input_size": 139} for m in ALL[2:]}


@pytest.mark.slow
@pytest.mark.parametrize("model", ALL)
def test_quantizes_and_builds_every_precision_with_tensorrt_rtx(export_bundle, model, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt_rtx")
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    b = tmp_path / model
    shutil.copytree(export_bundle(model, **SIZE.get(model, {})), b)
    # random weights: the gate has nothing meaningful to judge, so it is opened here
    calibrate_bundle(CalibrateRequest(b, None, num_images=16, min_agreement=0.0))
    times = {}
    for precision in ("fp32", "fp16", "int8"):
        res = build(EngineRequest(b, precision, "desktop-ada", batch=Batch(1, 2, 4), prefer="tensorrt_rtx"))
        assert not res.reused and res.path.stat().st_size > 1_000_000
        assert res.entry["batch"] == {"min": 1, "opt": 2, "max": 4} and res.entry["strongly_typed"]
        times[precision] = res.entry["build_seconds"]
    engines = mf.read(b).engines
    assert sorted(e["precision"] for e in engines) == ["fp16", "fp32", "int8"]
    assert {e["onnx"] for e in engines} == {"model.onnx", "model.fp16.onnx", "model.int8.onnx"}
    print(f"\nbuild seconds {model}: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))


def _qdq_placement(model):
    """What feeds and reads each weighted layer and residual Add in a Q/DQ model."""
    producers = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return producers, readers


RESIDUAL_BLOCKS = {"inception_resnet_v1": 5 + 10 + 5 + 1, "inception_resnet_v2": 10 + 20 + 10}


def check_tensorrt_placement(model_name, fp32, q):
    """TensorRT's explicit-quantization guidance, node by node."""
    producers, readers = _qdq_placement(q)
    pre_order = quantize.activations.preprocessing_nodes(fp32)
    pre = set(pre_order)
    weighted = [n for n in q.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(weighted) == len([n for n in fp32.graph.node if n.op_type in ("Conv", "Gemm")])
    for n in weighted:
        x, w = producers[n.input[0]], producers[n.input[1]]
        # inputs quantized: activation per tensor, weight per output channel, symmetric
        assert x.op_type == "DequantizeLinear" and w.op_type == "DequantizeLinear", n.name
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
        assert inits[x.input[1]].size == 1 and not inits[x.input[2]].any()
        assert inits[w.input[1]].size == inits[w.input[0]].shape[0] and inits[w.input[0]].dtype == np.int8
        assert len(n.input) < 3 or n.input[2] in inits and inits[n.input[2]].dtype == np.float32  # float bias
        # output never quantized (TensorRT fuses the next layer's Q into this one)
        assert not [r for r in readers.get(n.output[0], []) if r.op_type == "QuantizeLinear"], n.name
    out = q.graph.output[0].name
    assert producers[out].op_type == "Gemm"  # logits straight from the classifier, float
    # preprocessing stays float: only its last output (the first convolution's input) is quantized
    by_name = {n.name: n for n in q.graph.node}
    inside = {o for p in pre_order[:-1] for o in by_name[p].output}
    assert not [n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inside]
    residual = [n for n in q.graph.node if n.op_type == "Add" and n.name not in pre
                and not any(i in {x.name for x in q.graph.initializer} for i in n.input)]
    quantized_inputs = [sum(producers[i].op_type == "DequantizeLinear" for i in n.input if i in producers)
                        for n in residual]
    assert all(k == 1 for k in quantized_inputs), "a residual Add has Q/DQ on its skip input only"
    assert len(residual) == RESIDUAL_BLOCKS.get(model_name, 0)
    for n in residual:  # the branch is the convolution itself (its scale folded in), so the add fuses into it
        assert sum(producers[i].op_type == "Conv" for i in n.input if i in producers) == 1, n.name
    # pooling runs in int8, and every reader of a tensor wants one scale (so the Q fuses into its producer)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    for n in q.graph.node:
        if n.op_type in ("MaxPool", "AveragePool", "GlobalAveragePool") and n.name not in pre:
            assert producers[n.input[0]].op_type == "DequantizeLinear", n.name
    for n in q.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] not in producers or producers[n.input[0]].op_type != "MaxPool":
            continue
        pool_in = producers[producers[n.input[0]].input[0]]  # the DQ feeding the pool
        assert pool_in.op_type == "DequantizeLinear"
        assert inits[n.input[1]] == inits[pool_in.input[1]], "max-pooled tensor keeps its input's scale"


@pytest.mark.slow
@pytest.mark.parametrize("model", ALL)
def test_qdq_placement_follows_tensorrt_guidance(export_bundle, model, tmp_path):
    import onnx as onnx_mod

    b = export_bundle(model, **SIZE.get(model, {}))
    fp32 = onnx_mod.load(str(b / "model.onnx"))
    from edgekit.quant import calibdata

    man = mf.read(b)
    imgs = calibdata.collect(calibdata.discover(calibdata.default_set(), variants=1)[:4], man.preprocess).images
    cal = quantize.calibrate(b / "model.onnx", imgs)
    q, layers = quantize.build(fp32, cal, "trt")
    check_tensorrt_placement(model, fp32, q)
    assert len(layers) == len([n for n in fp32.graph.node if n.op_type in ("Conv", "Gemm")]) + \
        RESIDUAL_BLOCKS.get(model, 0)
