"""INT8 calibration of a bundle, the FP16 variant, and the accuracy gate.

Everything is written into a copy of the bundle beside it (hard links to the files that stay)
that replaces the bundle in one atomic swap once the gate passes: an interrupted, killed or
failed run (a full disk too) leaves the bundle as it was. The bundle is locked meanwhile.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.callbacks import Log, Progress
from edgekit.errors import GATE_FAILED, BundleError, EdgekitError, UsageError
from edgekit.quant import calibcache, calibdata, gate, quantize, sensitivity
from edgekit.quant.calib_inputs import (
    _check,
    _Data,
    _gather,
)

# The TensorRT version written into calibration.cache; JetPack 6.1/6.2 ship 10.3. TensorRT
# ignores a cache of another version, so the engine builder rewrites it for the running one.
DEFAULT_CACHE_TRT = "10.3.0"


class GateError(EdgekitError):
    """A reduced-precision model strays from FP32 on the validation images, as the data show."""

    exit_code = GATE_FAILED


@dataclass(frozen=True)
class CalibrateRequest:
    bundle: Path
    data: Path | None = None
    method: str = "entropy"
    num_images: int | None = None
    percentile: float = 99.99
    val_data: Path | None = None
    holdout: float = 0.2
    min_agreement: float = 0.99
    fallback: str = "none"  # or "auto"
    max_fallback: int = 10
    cache_trt_version: str = DEFAULT_CACHE_TRT
    fp16: bool = True
    max_drop: float = 0.01  # labelled top-1 accuracy drop allowed (a share: 0.01 = 1 point)
    num_val_images: int | None = None  # validation images to use [default: all, up to DEFAULT_VAL_IMAGES]
    split: Any = None  # an edgekit.export.dataset.Split (a training run's): calibrate on its training images, gate on
    #                    its validation images with their labels; data and val_data must then be None
    int8: bool = True  # False: only the FP16 model and its gate (edgekit build --fp16 needs no INT8)


@dataclass(frozen=True)
class CalibrateResult:
    manifest: mf.Manifest
    figures: dict[str, dict[str, Any]]  # precision -> agreement with FP32 and the gate's tests
    fallback_layers: list[str]
    seconds: float
    judgements: dict[str, gate.Judgement] = field(default_factory=dict)


def _noop(*_: Any) -> None:
    pass


def calibrate_bundle(req: CalibrateRequest, log: Log = _noop, progress: Progress | None = None) -> CalibrateResult:
    """Calibrate, write the INT8/FP16 forms and gate them against FP32; the bundle changes only on success."""
    t0 = time.perf_counter()
    _check(req)
    # a clear error for what is not a bundle, before any lock file is made beside it
    _check_sizes(req.bundle, mf.read(req.bundle))
    where = bundle_mod.real(Path(req.bundle))
    for d in (where, where.parent):  # the bundle is changed by a copy beside it, swapped in: both need writing
        if not os.access(d, os.W_OK | os.X_OK):
            raise UsageError(f"cannot change {req.bundle}: {d} is not writable by this user; calibrate a copy "
                             f"(cp -r {req.bundle} NEW) or run as the bundle's owner")
    with bundle_mod.lock(req.bundle):
        bundle_mod.tidy(req.bundle)
        bundle_mod.pause_point("calibrate.locked")
        return _calibrate_locked(req, log, progress, t0)


def _onnx_input_shape(model: Any) -> tuple[int | str, ...]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)


def _check_sizes(bundle: Path, man: mf.Manifest, model: Any = None) -> None:
    """The preprocessing size must be the model's (as loading the bundle checks it), or every image
    would fail inside ONNX Runtime."""
    from edgekit.runners.shapes import check_input_size

    check_input_size(bundle, man, _onnx_input_shape(model) if model is not None else None, ", then calibrate it")


def _load_onnx(path: Path) -> Any:
    """The model, or a clear error naming the file when it is not one (whatever its sha256 says)."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        if not model.graph.input or not model.graph.output:
            raise ValueError("the graph has no input or output")
    except Exception as exc:  # onnx raises DecodeError, ValidationError and others
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BundleError(f"{path} is not a readable ONNX model ({why}), though it matches its sha256 in the "
                          "manifest: the bundle was written wrongly; rebuild it with edgekit export") from None
    return model


def _calibrate_locked(req: CalibrateRequest, log: Log, progress: Progress | None, t0: float) -> CalibrateResult:
    from edgekit.quant.simulate import SimRunner
    from edgekit.runners.ort import OrtRunner

    man = mf.read(req.bundle)
    art = man.artifact("onnx", "fp32")
    if art is None:
        raise UsageError(f"{req.bundle} has no FP32 ONNX model to calibrate; export it again")
    fp32 = bundle_mod.artifact_path(req.bundle, art)
    model = _load_onnx(fp32)
    _check_sizes(req.bundle, man, model)
    data = _gather(req, man, log)
    if not req.int8:
        return _fp16_only(req, man, fp32, model, data, log, t0)
    calib_set, val_set = data.calib, data.val
    labelled = "labelled " if data.labels is not None else ""
    log(f"calibrating ({req.method}) on {len(calib_set.items)} images; "
        f"validating on {len(val_set.items)} held-out {labelled}images")
    from edgekit.preprocess import graph_input

    float_input = man.input.dtype != "uint8"
    calib_feed = graph_input(calib_set.images, float_input, man.input.color_order)
    val_feed = graph_input(val_set.images, float_input, man.input.color_order)
    cal = quantize.calibrate(fp32, calib_feed, req.method, req.percentile, progress)
    log(f"calibration: {cal.seconds:.1f} s ({len(calib_set.items) / max(cal.seconds, 1e-9):.1f} images/s, "
        "two passes: ranges, then histograms)")
    batch, static = gate.batching(man)
    with OrtRunner(fp32) as r:
        ref = gate.run_all(r, val_feed, batch, static)

    def judge(precision: str, logits: np.ndarray) -> gate.Judgement:
        return gate.judge(precision, ref, logits, req.min_agreement, data.labels, req.max_drop)

    def simulated(precision: str, qmodel: Any) -> gate.Judgement:
        with SimRunner(qmodel) as r:
            return judge(precision, gate.run_all(r, val_feed, batch, static))

    excluded: list[str] = []
    ranking: list[str] | None = None
    while True:
        trt_model, layers = quantize.build(model, cal, "trt", excluded)
        if not layers and not excluded:
            raise UsageError(f"{fp32.name} has no Conv, Gemm or MatMul layer that INT8 could quantize; "
                             "use FP16 or FP32 for this model")
        cpu_model, _ = quantize.build(model, cal, "cpu", excluded)
        judged = {"int8": simulated("int8", trt_model), "int8-cpu": simulated("int8-cpu", cpu_model)}
        kept = f", {len(excluded)} layer(s) kept in FP32" if excluded else ""
        for name, what in (("int8", "TensorRT Q/DQ"), ("int8-cpu", "CPU form")):
            log(f"INT8 ({what}, TensorRT arithmetic simulated) vs FP32: {judged[name].summary()}{kept}")
        if not any(j.failed for j in judged.values()):
            break
        if req.fallback != "auto" or len(excluded) >= req.max_fallback:
            raise GateError(_gate_message(req, man, judged, excluded))
        if ranking is None:
            log("finding the layers most sensitive to quantization")
            ranking = sensitivity.rank(model, cal.amax, [], val_feed, ref, max(batch, 32) if not static
                                       else batch, static, max(8, 2 * req.max_fallback), log)
        remaining = [n for n in ranking if n not in excluded]
        if not remaining:
            raise GateError(_gate_message(req, man, judged, excluded))
        excluded.append(remaining[0])
        log(f"keeping {remaining[0]} in FP32")
    import onnx

    fresh = tuple(name for name, _, prec in _FILES if req.fp16 or prec != "fp16")
    # new files: about the FP32 model's size in all (INT8 a quarter each, FP16 a half)
    with bundle_mod.updating(req.bundle, fresh, need=int(art.bytes * 1.1) + (1 << 20)) as work:
        onnx.save(trt_model, str(work / "model.int8.onnx"))
        onnx.save(cpu_model, str(work / "model.int8-cpu.onnx"))
        if req.fp16:
            _fp16_form(req, man, fp32, model, work, ref, val_feed, data.labels, judged, excluded, log)
        # implicit INT8 from calibration.cache (TensorRT < 11, DLA): gated when a DLA engine is built
        judged["dla"] = simulated("dla", quantize.implicit_model(fp32, cal))
        log(f"implicit INT8 from calibration.cache (DLA, TensorRT < 11), simulated: {judged['dla'].summary()}")
        # bf16: OpenVINO's path on CPUs with AVX512-BF16 or AMX; judged for the runtime's choice, never fatal
        with SimRunner(model, storage="bf16") as bf:
            judged["bf16"] = judge("bf16", gate.run_all(bf, val_feed, batch, static))
        log(f"bf16 (OpenVINO on CPUs with AVX512-BF16/AMX, simulated) vs FP32: {judged['bf16'].summary()}"
            + ("; the runtime will not choose bf16 (INT8 and FP16 are unaffected)" if judged["bf16"].failed else ""))
        here = _cpu_kernels_here(work / "model.int8-cpu.onnx", ref, val_feed, batch, static)
        more = data.val_available > len(val_set.items)
        for j in judged.values():
            if j.advice():
                log(f"note: {j.advice()}" + (f" (--num-val-images: {data.val_available} are there)" if more else ""))
        version = calibcache.trt_version_number(req.cache_trt_version)
        # TensorRT knows no percentile calibrator: its ranges are served as an entropy cache
        algorithm = "MinMaxCalibration" if req.method == "minmax" else "EntropyCalibration2"
        cache = calibcache.from_amax(cal.amax, version, algorithm)
        (work / "calibration.cache").write_text(calibcache.dumps(cache), encoding="utf-8")
        (work / "calibration.json").write_text(
            quantize.ranges_json(cal, calib_set.digest(), len(calib_set.items), len(calib_set.skipped),
                                 str(req.data or calibdata.default_set())), encoding="utf-8")
        new = _install(man, work, judged, cal, excluded, req, data, here)
    return CalibrateResult(new, {k: v.to_dict() for k, v in judged.items()}, excluded, time.perf_counter() - t0,
                           judged)


def _fp16_form(req: CalibrateRequest, man: mf.Manifest, fp32: Path, model: Any, work: Path, ref: np.ndarray,
               val_feed: np.ndarray, labels: np.ndarray | None, judged: dict[str, gate.Judgement],
               excluded: list[str], log: Log) -> None:
    """model.fp16.onnx written into ``work`` and judged into ``judged["fp16"]``; a failure is the GateError."""
    from edgekit.quant.simulate import SimRunner

    quantize.to_fp16(fp32, work / "model.fp16.onnx")
    batch, static = gate.batching(man)
    # judged as an FP16 engine computes (float16 storage, float32 sums), the same on any CPU
    with SimRunner(model, fp16=True) as half:
        judged["fp16"] = gate.judge("fp16", ref, gate.run_all(half, val_feed, batch, static), req.min_agreement,
                                    labels, req.max_drop)
    log(f"FP16 vs FP32: {judged['fp16'].summary()}")
    if judged["fp16"].failed:
        raise GateError(_gate_message(req, man, judged, excluded, "fp16"))


def _fp16_only(req: CalibrateRequest, man: mf.Manifest, fp32: Path, model: Any, data: _Data, log: Log,
               t0: float) -> CalibrateResult:
    """model.fp16.onnx and its gate alone: what an FP16 build needs, without calibrating INT8."""
    from edgekit.preprocess import graph_input
    from edgekit.runners.ort import OrtRunner

    val_feed = graph_input(data.val.images, man.input.dtype != "uint8", man.input.color_order)
    batch, static = gate.batching(man)
    log(f"FP16: judged against FP32 on {len(data.val.items)} images")
    with OrtRunner(fp32) as r:
        ref = gate.run_all(r, val_feed, batch, static)
    art = man.artifact("onnx", "fp32")
    assert art is not None
    judged: dict[str, gate.Judgement] = {}
    with bundle_mod.updating(req.bundle, ("model.fp16.onnx",), need=art.bytes // 2 + (1 << 20)) as work:
        _fp16_form(req, man, fp32, model, work, ref, val_feed, data.labels, judged, [], log)
        if judged["fp16"].advice():
            log(f"note: {judged['fp16'].advice()}")
        f = work / "model.fp16.onnx"
        new = man.with_artifact(mf.Artifact(f.name, "onnx", bundle_mod.sha256(f), f.stat().st_size, "fp16"))
        new = replace(new, validation={**new.validation, "fp16": judged["fp16"].to_dict()})
        bundle_mod.write_text_atomic(work / mf.MANIFEST, new.to_json())
    return CalibrateResult(new, {k: v.to_dict() for k, v in judged.items()}, [], time.perf_counter() - t0, judged)


def _cpu_kernels_here(path: Path, ref: np.ndarray, images: np.ndarray, batch: int, static: bool) -> dict[str, Any]:
    """The CPU form on this CPU's own fused kernels: what ``edgekit run`` will see here."""
    from edgekit.cpuinfo import detect
    from edgekit.runners.ort import OrtRunner

    with OrtRunner(path) as r:
        got = gate.run_all(r, images, batch, static)
    fig = gate.agreement(ref, got)
    return {"cpu": detect().describe(), "top1_agreement": round(fig.top1_agreement, 6),
            "cosine": round(fig.cosine, 6)}


def _gate_message(req: CalibrateRequest, man: mf.Manifest, judged: dict[str, gate.Judgement], excluded: list[str],
                  which: str | None = None) -> str:
    failed = [j for j in judged.values() if j.failed and (which is None or j.precision == which)]
    tried = f" after keeping {len(excluded)} layer(s) in FP32" if excluded else ""
    what = "; ".join(f"{j.precision}: {j.summary()}" for j in failed)
    if which == "fp16":
        hint = "the model overflows or underflows in FP16: use INT8 or FP32 for it, or report the model"
    elif req.fallback != "auto":
        hint = ("try --fallback auto (keeps the most sensitive layers in FP32), calibrate on more images from "
                "your camera, or try --method percentile")
    else:
        hint = (f"raise --max-fallback (now {req.max_fallback}), calibrate on more images from your camera, "
                "or try --method percentile")
    if man.model.weights.startswith("random"):
        hint = ("The reason is the random weights (--weights random): their outputs are nearly equal for every class, "
                "so any rounding changes the top-1; the gate is meant for trained weights: use --weights imagenet or "
                "your checkpoint (--min-agreement 0 builds anyway, for a trial of the pipeline).")
    return f"accuracy gate failed{tried}: {what}. The bundle is unchanged. {hint}"


_FILES = (("model.int8.onnx", "onnx", "int8"), ("model.int8-cpu.onnx", "onnx", "int8-cpu"),
          ("calibration.cache", "calibration", None), ("calibration.json", "calibration", None),
          ("model.fp16.onnx", "onnx", "fp16"))


def _install(man: mf.Manifest, work: Path, judged: dict[str, gate.Judgement],
             cal: quantize.Calibration, excluded: list[str], req: CalibrateRequest, data: _Data,
             here: dict[str, Any]) -> mf.Manifest:
    """The new manifest, written last into the updated copy of the bundle."""
    files = [f for f in _FILES if (work / f[0]).exists()]
    new = man
    for name, kind, prec in files:
        f = work / name
        new = new.with_artifact(mf.Artifact(name, kind, bundle_mod.sha256(f), f.stat().st_size, prec))
    validation = dict(new.validation)
    validation["int8"] = {
        "method": cal.method, "percentile": cal.percentile, "calibration_images": len(data.calib.items),
        "validation_images": len(data.val.items), "labelled": data.labels is not None,
        "min_agreement": req.min_agreement, "max_drop": req.max_drop,
        "fallback_layers": excluded, "calibration_seconds": round(cal.seconds, 2),
        "judged_by": "TensorRT arithmetic simulated (int8 x int8 products, exact int32 sums, per-channel rescale); "
                     "the CPU form (cpu) as ONNX Runtime's and OpenVINO's u8 x s8 kernels compute it with 7-bit "
                     "weights (exact int32 sums)",
        "tensorrt": judged["int8"].to_dict(), "cpu": judged["int8-cpu"].to_dict(), "dla": judged["dla"].to_dict(),
        "cpu_weight_bits": 7, "cpu_kernels_here": here,
    }
    if "fp16" in judged:
        validation["fp16"] = judged["fp16"].to_dict()
    validation["bf16"] = {**judged["bf16"].to_dict(), "judged_by": "OpenVINO's bf16 arithmetic simulated (weights and "
                          "tensors rounded to bfloat16, float32 sums); a failure only keeps the runtime from bf16"}
    new = replace(new, validation=validation)
    bundle_mod.write_text_atomic(work / mf.MANIFEST, new.to_json())
    return new
