"""The compatibility table: what each TensorRT version needs, checked row by row."""

from __future__ import annotations

import pytest

from edgekit.errors import UsageError
from edgekit.trt.compat import features, strategy


@pytest.mark.parametrize("version,explicit,typed,flags,implicit,v3,opt", [
    ("8.2.1", True, False, True, True, False, False),  # JetPack 4.6.1
    ("8.5.2", True, False, True, True, True, False),  # JetPack 5
    ("8.6.2", True, False, True, True, True, True),  # JetPack 6.0
    ("10.3.0", False, True, True, True, True, True),  # JetPack 6.1/6.2
    ("11.4.1", False, True, False, False, True, True),  # pip, desktop
])
def test_tensorrt_rows(version, explicit, typed, flags, implicit, v3, opt):
    f = features("tensorrt", version)
    assert (f.explicit_batch_flag, f.strongly_typed, f.precision_flags, f.implicit_int8, f.execute_v3,
            f.opt_level) == (explicit, typed, flags, implicit, v3, opt)


def test_rtx_row():
    f = features("tensorrt_rtx", "1.7.1.116")
    assert f.strongly_typed and not f.strongly_typed_flag and not f.precision_flags and not f.dla
    assert f.target_compute_capability and not f.implicit_int8


def test_too_old_is_refused():
    with pytest.raises(UsageError, match="older than edgekit supports"):
        features("tensorrt", "7.1.3")


@pytest.mark.parametrize("version,precision,dla,onnx,typed,flags,calib", [
    ("8.5.2", "fp16", False, "fp32", False, ("FP16",), False),
    ("8.5.2", "int8", False, "int8", False, ("INT8", "FP16"), False),  # explicit Q/DQ + flags
    ("8.5.2", "int8", True, "fp32", False, ("INT8", "FP16", "GPU_FALLBACK"), True),  # DLA: cache
    ("10.3.0", "fp16", False, "fp16", True, (), False),
    # 10.x INT8 weakly typed with FP16 allowed: strongly typed, layers outside Q/DQ would run FP32
    ("10.3.0", "int8", False, "int8", False, ("INT8", "FP16"), False),
    ("10.3.0", "int8", True, "fp32", False, ("INT8", "FP16", "GPU_FALLBACK"), True),
    ("11.4.1", "int8", True, "int8", True, ("GPU_FALLBACK",), False),  # no implicit INT8 left
    ("11.4.1", "fp16", False, "fp16", True, (), False),
])
def test_strategy(version, precision, dla, onnx, typed, flags, calib):
    s = strategy(features("tensorrt", version), precision, dla)
    assert (s.onnx_precision, s.strongly_typed, s.builder_flags, s.calibrator) == (onnx, typed, flags, calib)


def test_rtx_has_no_dla():
    with pytest.raises(UsageError, match="cannot target DLA"):
        strategy(features("tensorrt_rtx", "1.7"), "int8", True)


@pytest.mark.parametrize("version,int8_weights", [("8.2.1", False), ("8.5.2", False), ("8.6.1", False),
                                                  ("10.3.0", True), ("11.4.0", True)])
def test_int8_weight_initializers_only_from_tensorrt_10(version, int8_weights):
    """8.x's parser refuses a DequantizeLinear fed by an int8 initializer (NVIDIA/TensorRT #2163):
    the builder hands it float weights behind a Q/DQ pair instead."""
    assert features("tensorrt", version).int8_weights is int8_weights
