"""Every zoo model quantizes, and builds with TensorRT-RTX on the CPU at FP32, FP16 and INT8,
with an optimisation profile, through `edgekit build`'s own code path."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("torch")

from edgekit import manifest as mf  # noqa: E402
from edgekit.calibrate import CalibrateRequest, calibrate_bundle  # noqa: E402
from edgekit.engine import EngineRequest, build  # noqa: E402
from edgekit.profiles import Batch  # noqa: E402

ALL = ["googlenet", "bn_inception", "inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ALL)
def test_quantizes_and_builds_every_precision_with_tensorrt_rtx(export_bundle, model, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt_rtx")
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    b = tmp_path / model
    shutil.copytree(export_bundle(model), b)
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
