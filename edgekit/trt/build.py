"""Building TensorRT engines (gpu tier), driven by the compatibility table.

Never constructs a Runtime: building works without a GPU on TensorRT-RTX.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError, UsageError
from edgekit.trt import compat
from edgekit.trt.parse import load_trt

if TYPE_CHECKING:  # checked against stubs generated from the bindings (tests/trt/test_stubs.py)
    from tensorrt_rtx import Builder, IBuilderConfig, INetworkDefinition, OnnxParser


class BuildError(EdgekitError):
    """TensorRT refused the model or ran out of resources."""


@dataclass(frozen=True)
class BuildOptions:
    batch: tuple[int, int, int] = (1, 1, 1)
    workspace_mib: int | None = None
    opt_level: int | None = None
    dla_core: int | None = None
    target_cc: str | None = None  # ahead-of-time target (TensorRT-RTX)
    version_compatible: bool = False
    hardware_compatible: bool = False
    timing_cache: bytes | None = None
    calibration_cache: str | None = None  # for the implicit-INT8 (DLA) path
    contexts: int = 2  # concurrent execution contexts to provide for where profiles cannot be shared (8.5)


@dataclass(frozen=True)
class Built:
    plan: bytes
    flavour: str
    version: str
    seconds: float
    timing_cache: bytes | None = None
    phases: dict[str, float] = field(default_factory=dict)
    profiles: int = 1  # optimisation profiles in the plan (one per concurrent context before 8.6)
    profile_sharing: bool = True  # contexts may share a profile (10+, or 8.6 with the preview feature)
    version_compatible: bool = False  # VERSION_COMPATIBLE set: the runtime must allow the plan's host code
    hardware_compatible: bool = False  # hardware_compatibility_level AMPERE_PLUS set


def _recorder(trt: ModuleType) -> Any:
    base = trt.ILogger

    class Recorder(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.lines: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity <= trt.ILogger.Severity.WARNING:
                self.lines.append(msg)

    return Recorder()


def _calibrator(trt: ModuleType, cache_text: str) -> Any:
    """Serves the bundle's calibration cache; rewrites the header for the running TensorRT
    (which ignores a cache of another version) and never asks for a calibration batch."""
    from edgekit.quant import calibcache

    cache = calibcache.loads(cache_text)
    cache = calibcache.CalibrationCache(calibcache.trt_version_number(trt.__version__), "EntropyCalibration2",
                                        cache.scales)
    data = calibcache.dumps(cache).encode()

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None

        def read_calibration_cache(self) -> bytes:
            return data

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

    return CacheCalibrator()


def _float_weight_model(path: Path, say: Callable[[str], None]) -> bytes:
    """The Q/DQ model with float weights behind a Q/DQ pair, as TensorRT 8.x's parser wants it."""
    import onnx

    from edgekit.quant.qdq import float_weights

    model = onnx.load(str(path))
    n = float_weights(model)
    say(f"{n} int8 weight tensors given to this TensorRT as float with a Q/DQ pair (same integers)")
    data: bytes = model.SerializeToString()
    return data


def build_engine(onnx_path: str | Path, precision: str = "fp32", options: BuildOptions | None = None,
                 prefer: str | None = None, log: Callable[[str], None] | None = None) -> Built:
    """Build one engine; ``onnx_path`` must be the ONNX the strategy names (see compat.strategy)."""
    opts = options or BuildOptions()
    trt = load_trt(prefer)
    feats = compat.features(trt.__name__, trt.__version__)
    strat = compat.strategy(feats, precision, opts.dla_core is not None)
    say = log or (lambda _: None)
    rec = _recorder(trt)
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    builder: Builder = trt.Builder(rec)
    flags = 0
    ncf = trt.NetworkDefinitionCreationFlag
    if feats.explicit_batch_flag:
        flags |= 1 << int(ncf.EXPLICIT_BATCH)
    if strat.strongly_typed and feats.strongly_typed_flag:
        flags |= 1 << int(ncf.STRONGLY_TYPED)
    network: INetworkDefinition = builder.create_network(flags)
    parser: OnnxParser = trt.OnnxParser(network, rec)
    say(f"parsing {Path(onnx_path).name} with {trt.__name__} {trt.__version__}")
    if strat.onnx_precision == "int8" and not feats.int8_weights:
        ok = parser.parse(_float_weight_model(Path(onnx_path), say))
    else:
        ok = parser.parse_from_file(str(onnx_path))
    if not ok:
        errs = [parser.get_error(i) for i in range(parser.num_errors)]
        detail = "; ".join(f"node {e.node_name() if hasattr(e, 'node_name') else e.node()} "
                           f"({e.node_operator() if hasattr(e, 'node_operator') else '?'}): {e.desc()}" for e in errs)
        raise BuildError(f"TensorRT's ONNX parser refused {Path(onnx_path).name}: {detail or 'no details'}; "
                         "re-export the bundle, or report the node above")
    phases["parse"] = time.perf_counter() - t0
    config: IBuilderConfig = builder.create_builder_config()
    legacy: Any = config  # attributes of older TensorRT versions, absent from current stubs
    if opts.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mib << 20)
    if opts.opt_level is not None and feats.opt_level:
        config.builder_optimization_level = opts.opt_level
    for name in strat.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if opts.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
    if strat.calibrator:
        if not opts.calibration_cache:
            raise BuildError("INT8 on DLA with this TensorRT needs the bundle's calibration.cache; "
                             "run edgekit calibrate first")
        legacy.int8_calibrator = _calibrator(trt, opts.calibration_cache)
    if opts.version_compatible:
        if not feats.version_compatible:
            raise UsageError(f"{trt.__name__} {trt.__version__} cannot build version-compatible engines "
                             "(TensorRT 8.6 or later); drop --version-compatible")
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if opts.hardware_compatible:
        if not feats.hardware_compatible:
            raise UsageError(f"{trt.__name__} {trt.__version__} cannot build hardware-compatible engines "
                             "(TensorRT 8.6 or later); drop --hardware-compatible")
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if opts.target_cc and feats.target_compute_capability:
        sm = getattr(trt.ComputeCapability, "SM" + opts.target_cc.replace(".", ""), None)
        if sm is None:
            raise UsageError(f"{trt.__name__} {trt.__version__} cannot target compute capability {opts.target_cc}")
        config.num_compute_capabilities = 1
        config.set_compute_capability(sm, 0)
    cache = None
    if feats.timing_cache:
        cache = config.create_timing_cache(opts.timing_cache or b"")
        config.set_timing_cache(cache, ignore_mismatch=True)
    inp = network.get_input(0)
    profiles, sharing = 1, True
    if inp.shape[0] == -1:
        lo, opt, hi = opts.batch
        rest = [int(inp.shape[i]) for i in range(1, len(inp.shape))]
        if feats.profile_sharing == "none":
            # one profile per concurrent context; a fixed batch (min = max, as DLA needs) gets one
            # profile and one context: copies of it would only multiply DLA loadables (16 per core)
            profiles, sharing = (max(1, opts.contexts) if lo != hi else 1), False
        elif feats.profile_sharing == "preview":
            legacy.set_preview_feature(trt.PreviewFeature.PROFILE_SHARING_0806, True)
        for _ in range(profiles):
            profile = builder.create_optimization_profile()
            profile.set_shape(inp.name, trt.Dims([lo, *rest]), trt.Dims([opt, *rest]), trt.Dims([hi, *rest]))
            config.add_optimization_profile(profile)
    say(f"building ({precision}, batch {opts.batch[0]}:{opts.batch[1]}:{opts.batch[2]}"
        + (f", DLA {opts.dla_core}" if opts.dla_core is not None else "") + "); this can take minutes on a Jetson")
    t1 = time.perf_counter()
    plan: Any = builder.build_serialized_network(network, config)  # IHostMemory: a buffer
    phases["build"] = time.perf_counter() - t1
    if plan is None:
        tail = " | ".join(rec.lines[-3:]) or "no message"
        oom = any(w in tail.lower() for w in ("memory", "alloc", "workspace"))
        fix = ("out of memory: use a smaller --workspace or --batch (on a Nano, add swap)" if oom
               else "check the lines above; a smaller --batch or --workspace often helps")
        raise BuildError(f"TensorRT could not build {Path(onnx_path).name}: {tail}; {fix}")
    timing = bytes(cache.serialize()) if cache is not None else None  # type: ignore[call-overload]
    return Built(bytes(plan), trt.__name__, trt.__version__, time.perf_counter() - t0, timing, phases,
                 profiles, sharing, opts.version_compatible, opts.hardware_compatible)
