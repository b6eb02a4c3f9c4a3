"""The compatibility table: what each TensorRT version needs, checked row by row."""

from __future__ import annotations

import pytest

from edgekit.errors import UsageError
from edgekit.trt.compat import features, strategy, version_compatible_runs


@pytest.mark.parametrize("version,explicit,typed,flags,implicit,dla,opt", [
    ("8.5.2", True, False, True, True, True, False),  # JetPack 5
    ("8.6.2", True, False, True, True, True, True),  # JetPack 6.0
    ("10.3.0", False, True, True, True, True, True),  # JetPack 6.1/6.2
    ("11.0.0", False, True, False, False, False, True),  # 11.0-11.3: no DLA
    ("11.3.0", False, True, False, False, False, True),
    ("11.4.1", False, True, False, False, True, True),  # pip, desktop; DLA again (AGX Orin, JetPack 7.2.2+)
])
def test_tensorrt_rows(version, explicit, typed, flags, implicit, dla, opt):
    f = features("tensorrt", version)
    assert (f.explicit_batch_flag, f.strongly_typed, f.precision_flags, f.implicit_int8, f.dla,
            f.opt_level) == (explicit, typed, flags, implicit, dla, opt)


def test_rtx_row():
    f = features("tensorrt_rtx", "1.7.1.116")
    assert f.strongly_typed and not f.strongly_typed_flag and not f.precision_flags and not f.dla
    assert f.target_compute_capability and not f.implicit_int8


@pytest.mark.parametrize("version", ["7.1.3", "8.0.1", "8.2.1", "8.4.1"])
def test_before_85_is_refused_with_the_fix(version):
    """JetPack 4.6 (8.0/8.2) and JetPack 5.0.2 (8.4.1): no uint8 input, no execute_async_v3."""
    with pytest.raises(UsageError, match="older than edgekit supports") as err:
        features("tensorrt", version)
    msg = str(err.value)
    assert "upgrade to JetPack 5.1 (TensorRT 8.5.2)" in msg and "edgekit build BUNDLE --profile jetson-nano" in msg
    assert "\n" not in msg


def test_dla_is_refused_on_tensorrt_11_before_11_4():
    with pytest.raises(UsageError, match="cannot target DLA"):
        strategy(features("tensorrt", "11.2.0"), "int8", True)
    assert strategy(features("tensorrt", "11.4.1"), "int8", True).builder_flags == ("GPU_FALLBACK",)


def test_dla_left_tensorrt_after_10_7():
    """JetPack 6's 10.3 targets DLA; 10.8 and later 10.x releases have none."""
    assert strategy(features("tensorrt", "10.3.0"), "fp16", True).builder_flags == ("FP16", "GPU_FALLBACK")
    assert strategy(features("tensorrt", "10.7.0"), "fp16", True).builder_flags == ("FP16", "GPU_FALLBACK")
    with pytest.raises(UsageError, match="cannot target DLA"):
        strategy(features("tensorrt", "10.8.0"), "fp16", True)


@pytest.mark.parametrize("built,here,ok", [
    ((8, 6, 1), (8, 6, 2), True), ((8, 6, 1), (10, 3, 0), True), ((8, 6, 1), (11, 4, 0), False),
    ((10, 3, 0), (10, 14, 1), True), ((10, 3, 0), (11, 4, 1), True), ((11, 4, 1), (11, 5, 0), True),
    ((10, 3, 0), (8, 6, 1), False), ((10, 8, 0), (10, 3, 0), False), ((11, 4, 1), (10, 14, 0), False),
    ((8, 5, 2), (8, 6, 1), False),  # no version-compatible plans before 8.6
])
def test_version_compatible_plans_run_forward_on_the_documented_runtimes(built, here, ok):
    assert version_compatible_runs(built, here) is ok


@pytest.mark.parametrize("version,precision,dla,onnx,typed,flags,calib", [
    ("8.5.2", "fp16", False, "fp32", False, ("FP16",), False),
    ("8.5.2", "int8", False, "int8", False, ("INT8", "FP16"), False),  # explicit Q/DQ + flags
    ("8.5.2", "int8", True, "fp32", False, ("INT8", "FP16", "GPU_FALLBACK"), True),  # DLA: cache
    ("10.3.0", "fp16", False, "fp16", True, (), False),
    # 10.x INT8 weakly typed with FP16 allowed: strongly typed, layers outside Q/DQ would run FP32
    ("10.3.0", "int8", False, "int8", False, ("INT8", "FP16"), False),
    ("10.3.0", "int8", True, "fp32", False, ("INT8", "FP16", "GPU_FALLBACK"), True),
    ("11.0.0", "int8", False, "int8", True, (), False),  # strongly typed only: the Q/DQ types decide
    ("11.4.1", "int8", True, "int8", True, ("GPU_FALLBACK",), False),  # no implicit INT8 left
    ("11.4.1", "fp16", False, "fp16", True, (), False),
    ("rtx 1.7.1", "int8", False, "int8", True, (), False),
    ("rtx 1.7.1", "fp16", False, "fp16", True, (), False),
])
def test_strategy(version, precision, dla, onnx, typed, flags, calib):
    flavour, version = ("tensorrt_rtx", version[4:]) if version.startswith("rtx ") else ("tensorrt", version)
    s = strategy(features(flavour, version), precision, dla)
    assert (s.onnx_precision, s.strongly_typed, s.builder_flags, s.calibrator) == (onnx, typed, flags, calib)


def test_rtx_has_no_dla():
    with pytest.raises(UsageError, match="cannot target DLA"):
        strategy(features("tensorrt_rtx", "1.7"), "int8", True)


@pytest.mark.parametrize("version,int8_weights", [("8.5.2", False), ("8.6.1", False),
                                                  ("10.3.0", True), ("11.4.0", True)])
def test_int8_weight_initializers_only_from_tensorrt_10(version, int8_weights):
    """8.x's parser refuses a DequantizeLinear fed by an int8 initializer (NVIDIA/TensorRT #2163):
    the builder hands it float weights behind a Q/DQ pair instead."""
    assert features("tensorrt", version).int8_weights is int8_weights
