"""Every TensorRT version difference edgekit cares about, in one table (base tier: no import).

Rows are (flavour, first version) -> features; a version takes the last row at or below it.
Sources: TensorRT release notes and API docs (8.5: execute_async_v3, memory pools and uint8
network inputs, the floor; 8.6: builder optimisation level, version- and hardware-compatible
engines; 9.x/10.0: STRONGLY_TYPED and explicit batch by default; 11.0: implicit quantization,
precision builder flags, IInt8Calibrator and DLA removed; 11.4: DLA back, AGX Orin only).
TensorRT-RTX is strongly typed only, has no calibrators and no DLA, and builds ahead of time
without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import UsageError


@dataclass(frozen=True)
class Features:
    explicit_batch_flag: bool  # must pass NetworkDefinitionCreationFlag.EXPLICIT_BATCH
    strongly_typed: bool  # precision from the ONNX types (FP16 ONNX, Q/DQ INT8)
    strongly_typed_flag: bool  # ... asked for with NetworkDefinitionCreationFlag.STRONGLY_TYPED
    precision_flags: bool  # BuilderFlag.FP16 / INT8 exist
    implicit_int8: bool  # IInt8EntropyCalibrator2 and calibration caches
    dla: bool  # can target a DLA core
    opt_level: bool  # builder_optimization_level
    version_compatible: bool  # BuilderFlag.VERSION_COMPATIBLE
    hardware_compatible: bool  # hardware_compatibility_level (desktop Ampere+, not Jetson)
    target_compute_capability: bool  # set_compute_capability (ahead-of-time builds, RTX)
    timing_cache: bool = True  # no-op (deprecated) in TensorRT-RTX since 1.2
    # DequantizeLinear straight from an int8 initializer; 8.x's parser wants float weights with
    # a Q/DQ pair ("only activation types allowed as input to this layer", NVIDIA/TensorRT #2163)
    int8_weights: bool = True
    # Two execution contexts on one optimisation profile at once: "default" from 10.0, "preview"
    # on 8.6 (PreviewFeature.PROFILE_SHARING_0806 set at build time), "none" before: each
    # concurrent context needs its own profile ("Profile 0 has been chosen by another
    # IExecutionContext"), so such engines are built with one profile per context.
    profile_sharing: str = "default"


_T = True
_F = False
_8X: dict[str, bool] = {"int8_weights": False}  # TensorRT 8.x's ONNX parser
#                    explicit strongly st-flag prec-flags implicit dla  opt   vc    hw    target
TABLE: dict[tuple[str, tuple[int, int]], Features] = {
    ("tensorrt", (8, 5)): Features(_T, _F, _F, _T, _T, _T, _F, _F, _F, _F, **_8X, profile_sharing="none"),
    ("tensorrt", (8, 6)): Features(_T, _F, _F, _T, _T, _T, _T, _T, _T, _F, **_8X, profile_sharing="preview"),
    ("tensorrt", (10, 0)): Features(_F, _T, _T, _T, _T, _T, _T, _T, _T, _F),
    # "TensorRT 10.7 was the last release that supported DLA" (NVIDIA's DLA pages for 11.x);
    # JetPack 6 boards stay on their 10.x (10.3)
    ("tensorrt", (10, 8)): Features(_F, _T, _T, _T, _T, _F, _T, _T, _T, _F),
    ("tensorrt", (11, 0)): Features(_F, _T, _T, _F, _F, _F, _T, _T, _T, _F),  # no DLA in 11.0-11.3
    ("tensorrt", (11, 4)): Features(_F, _T, _T, _F, _F, _T, _T, _T, _T, _F),  # DLA again (AGX Orin, JetPack 7.2.2+)
    ("tensorrt_rtx", (1, 0)): Features(_F, _T, _F, _F, _F, _F, _T, _T, _T, _T, timing_cache=_F),
}

# TensorRT before 8.5 (JetPack 4.6: 8.0/8.2; JetPack 5.0.2: 8.4.1) takes no uint8 network input
# ("Unsupported ONNX data type: UINT8 (2)", NVIDIA/TensorRT #1503) and has no execute_async_v3:
# edgekit's engines and runner cannot work there; the JetPack 4 kit (edgekit/deploy/jetpack4.py) can.
FLOOR = (8, 5)

# Version-compatible plans load only in a later runtime (never an earlier one): within their
# major version, and across the pairs NVIDIA documents (8.6 plans on 10.x, 10.x plans on 11.x).
VERSION_COMPATIBLE_RUNTIMES: dict[int, tuple[int, ...]] = {8: (8, 10), 10: (10, 11), 11: (11,)}


def parse_version(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError as exc:
        raise UsageError(f"cannot read TensorRT version {version!r}") from exc


def features(flavour: str, version: str) -> Features:
    v = parse_version(version)
    if flavour == "tensorrt" and v < FLOOR:
        raise UsageError(
            f"TensorRT {version} is older than edgekit supports (8.5 or later: before 8.5 TensorRT takes no uint8 "
            "input and has no execute_async_v3); upgrade to JetPack 5.1 (TensorRT 8.5.2), or build the JetPack 4 "
            "kit: edgekit build BUNDLE --profile jetson-nano (or jetson-tx2) on any machine")
    rows = sorted((k[1], f) for k, f in TABLE.items() if k[0] == flavour and k[1] <= v)
    if not rows:
        supported = ", ".join(f"{a}.{b}" for (fl, (a, b)) in TABLE if fl == flavour)
        raise UsageError(f"{flavour} {version} is older than edgekit supports (from {supported}); "
                         "upgrade JetPack or TensorRT")
    return rows[-1][1]


def version_compatible_runs(built: tuple[int, ...], here: tuple[int, ...]) -> bool:
    """Whether a plan built version-compatible by TensorRT ``built`` loads in TensorRT ``here``
    (full releases, e.g. (8, 6, 1, 6)): forward only, from 8.6, on the documented runtimes."""
    return built >= (8, 6) and here >= built and here[0] in VERSION_COMPATIBLE_RUNTIMES.get(built[0], ())


@dataclass(frozen=True)
class Strategy:
    onnx_precision: str  # which of the bundle's ONNX models to parse
    strongly_typed: bool
    builder_flags: tuple[str, ...]  # BuilderFlag names to set
    calibrator: bool  # serve calibration.cache through an IInt8EntropyCalibrator2


def strategy(f: Features, precision: str, dla: bool) -> Strategy:
    """How to get ``precision`` out of this TensorRT: typed ONNX first, flags where needed."""
    if dla and not f.dla:
        raise UsageError("this TensorRT cannot target DLA (TensorRT-RTX, TensorRT 10.8-10.x and 11.0-11.3 have none; "
                         "JetPack 6's TensorRT 10.3 does); drop --dla")
    gpu_fallback = ("GPU_FALLBACK",) if dla else ()
    if precision == "fp32":
        return Strategy("fp32", f.strongly_typed, gpu_fallback, False)
    if precision == "fp16":
        if f.strongly_typed and not dla:
            return Strategy("fp16", True, (), False)
        if f.precision_flags:
            return Strategy("fp32", False, ("FP16",) + gpu_fallback, False)
        return Strategy("fp16", True, gpu_fallback, False)
    if precision == "int8":
        if dla and f.implicit_int8:
            # DLA before TensorRT 11 takes INT8 from per-tensor scales: serve the bundle's cache
            return Strategy("fp32", False, ("INT8", "FP16") + gpu_fallback, True)
        if f.precision_flags:
            # weakly typed (8.x, 10.x): the Q/DQ layers run INT8 and every layer outside them may
            # run FP16; strongly typed, those would be held to the ONNX's FP32
            return Strategy("int8", False, ("INT8", "FP16") + gpu_fallback, False)
        # TensorRT 11 and TensorRT-RTX are strongly typed only. edgekit's Q/DQ placement quantizes
        # every convolution, pooling, concatenation and residual add, so the engine runs int8
        # from the first convolution to the classifier, whose logits stay float32 (TensorRT-RTX's
        # layer report, tests/trt/test_engine.py); a float16-typed model would change only the
        # classifier, where float16 can overflow before its rescale
        return Strategy("int8", True, gpu_fallback, False)
    raise UsageError(f"unknown precision {precision!r}; choose from fp32, fp16, int8")
