"""Every zoo model quantizes, and its Q/DQ (and FP16) ONNX builds with TensorRT-RTX on the CPU."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("torch")

from edgekit import manifest as mf  # noqa: E402
from edgekit.calibrate import CalibrateRequest, calibrate_bundle  # noqa: E402

ALL = ["googlenet", "bn_inception", "inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ALL)
def test_quantizes_and_builds_with_tensorrt_rtx(export_bundle, model, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from edgekit.trt.build import build_engine

    b = tmp_path / model
    shutil.copytree(export_bundle(model), b)
    # random weights: the gate has nothing meaningful to judge, so it is opened here
    calibrate_bundle(CalibrateRequest(b, None, num_images=16, min_agreement=0.0))
    man = mf.read(b)
    assert man.artifact("onnx", "int8") is not None and man.artifact("onnx", "fp16") is not None
    for name in ("model.int8.onnx", "model.fp16.onnx"):
        built = build_engine(b / name, (1, 2, 4), prefer="tensorrt_rtx")
        assert len(built.plan) > 1_000_000
