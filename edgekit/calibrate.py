"""INT8 calibration of a bundle, the FP16 variant, and the accuracy gate.

Everything is made in a temporary directory and moved into the bundle only once the gate
passes, with the manifest written last: an interrupted or failed run leaves the bundle as
it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import bundle as bundle_mod
from edgekit import calibcache, calibdata, gate, quantize
from edgekit import manifest as mf
from edgekit.errors import EdgekitError, UsageError

DEFAULT_IMAGES = 500
DEFAULT_VAL_IMAGES = 500
# The TensorRT version written into calibration.cache; JetPack 6.1/6.2 ship 10.3. TensorRT
# ignores a cache of another version, so the engine builder rewrites it for the running one.
DEFAULT_CACHE_TRT = "10.3.0"

Log = Callable[[str], None]
Progress = Callable[[int, int], None]


class GateError(EdgekitError):
    """INT8 strays too far from FP32 on the validation images."""


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


@dataclass(frozen=True)
class CalibrateResult:
    manifest: mf.Manifest
    figures: dict[str, dict[str, Any]]  # precision -> agreement with FP32
    fallback_layers: list[str]
    seconds: float


def _noop(*_: Any) -> None:
    pass


def _gather(req: CalibrateRequest, man: mf.Manifest, log: Log) -> tuple[calibdata.Collected, calibdata.Collected]:
    pre = man.preprocess
    source = req.data or calibdata.default_set()
    if req.data is None:
        log(f"no --calib-data: calibrating on edgekit's general-purpose photographs ({source}); "
            "images from your own camera calibrate better (--calib-data DIR)")
    items = calibdata.discover(source, variants=8 if req.data is None else 1)
    if req.val_data is not None:
        val_items = calibdata.discover(req.val_data)
        both = {it.key for it in items} & {it.key for it in val_items}
        if both:
            raise UsageError(f"{len(both)} images are in both --calib-data and --val-data (e.g. {sorted(both)[0]}); "
                             "calibration and validation images must not overlap")
        calib_items = items
    else:
        if not 0 < req.holdout < 1:
            raise UsageError(f"--holdout must be between 0 and 1, got {req.holdout}")
        calib_items, val_items = calibdata.split(items, req.holdout, Path(source) if Path(source).is_dir() else None)
    if req.num_images is not None and req.num_images < 1:
        raise UsageError(f"--num-images must be at least 1, got {req.num_images}")
    calib = calibdata.collect(calib_items, pre, req.num_images or DEFAULT_IMAGES)
    val = calibdata.collect(val_items, pre, DEFAULT_VAL_IMAGES)
    for warn in (calibdata.skipped_warning(calib.skipped), calibdata.skipped_warning(val.skipped)):
        if warn:
            log(f"warning: {warn}")
    if req.num_images is not None and len(calib.items) < req.num_images:
        raise UsageError(
            f"asked for {req.num_images} calibration images but {source} has only {len(calib.items)} usable "
            f"({len(calib.skipped)} unreadable, {len(val_items)} held out for validation); "
            "add images or lower --num-images"
        )
    if len(calib.items) == 0:
        raise UsageError(f"no usable calibration images in {source}")
    if len(val.items) == 0:
        raise UsageError(
            f"no validation images: {source} is too small to hold out {req.holdout:.0%}; "
            "add images or pass --val-data DIR"
        )
    return calib, val


def calibrate_bundle(req: CalibrateRequest, log: Log = _noop, progress: Progress | None = None) -> CalibrateResult:
    t0 = time.perf_counter()
    if req.fallback not in ("none", "auto"):
        raise UsageError(f"--fallback must be none or auto, got {req.fallback!r}")
    if not 0 <= req.min_agreement <= 1:
        raise UsageError(f"--min-agreement must be between 0 and 1, got {req.min_agreement}")
    if req.method not in quantize.METHODS:
        raise UsageError(f"unknown calibration method {req.method!r}; choose from {', '.join(quantize.METHODS)}")
    man = mf.read(req.bundle)
    art = man.artifact("onnx", "fp32")
    if art is None:
        raise UsageError(f"{req.bundle} has no FP32 ONNX model to calibrate; export it again")
    fp32 = bundle_mod.artifact_path(req.bundle, art)
    calib_set, val_set = _gather(req, man, log)
    log(f"calibrating ({req.method}) on {len(calib_set.items)} images; "
        f"validating on {len(val_set.items)} held-out images")
    cal = quantize.calibrate(fp32, calib_set.images, req.method, req.percentile, progress)
    log(f"calibration: {cal.seconds:.1f} s ({len(calib_set.items) / max(cal.seconds, 1e-9):.1f} images/s)")
    batch, static = gate.batching(man)

    from edgekit.runners.ort import OrtRunner

    with OrtRunner(fp32) as r:
        ref = gate.run_all(r, val_set.images, batch, static)
    work = Path(tempfile.mkdtemp(prefix=".calibrate-", dir=req.bundle))
    try:
        def measure(path: Path) -> gate.Agreement:
            with OrtRunner(path) as r:
                return gate.agreement(ref, gate.run_all(r, val_set.images, batch, static))

        excluded: list[str] = []
        ranking: list[str] | None = None
        while True:
            quantize.quantize(fp32, cal, work / "model.int8.onnx", "trt", excluded)
            quantize.quantize(fp32, cal, work / "model.int8-cpu.onnx", "cpu", excluded)
            figs = {"int8": measure(work / "model.int8.onnx"), "int8-cpu": measure(work / "model.int8-cpu.onnx")}
            worst = min(f.top1_agreement for f in figs.values())
            kept = f", {len(excluded)} layer(s) kept in FP32" if excluded else ""
            log(f"INT8 vs FP32: top-1 agreement {figs['int8'].top1_agreement:.3f} (TensorRT Q/DQ), "
                f"{figs['int8-cpu'].top1_agreement:.3f} (CPU){kept}")
            if worst >= req.min_agreement:
                break
            if req.fallback != "auto" or len(excluded) >= req.max_fallback:
                raise GateError(_gate_message(req, figs, excluded))
            if ranking is None:
                log("finding the layers most sensitive to quantization")
                ranking = sensitivity(fp32, work / "model.int8.onnx", val_set.images[: min(8, len(val_set.images))])
            remaining = [n for n in ranking if n not in excluded]
            if not remaining:
                raise GateError(_gate_message(req, figs, excluded))
            excluded.append(remaining[0])
            log(f"keeping {remaining[0]} in FP32")
        if req.fp16:
            quantize.to_fp16(fp32, work / "model.fp16.onnx")
            figs["fp16"] = measure(work / "model.fp16.onnx")
            log(f"FP16 vs FP32: top-1 agreement {figs['fp16'].top1_agreement:.3f}")
        version = calibcache.trt_version_number(req.cache_trt_version)
        # TensorRT knows no percentile calibrator: its ranges are served as an entropy cache
        algorithm = "MinMaxCalibration" if req.method == "minmax" else "EntropyCalibration2"
        cache = calibcache.from_ranges(cal.ranges, version, algorithm)
        (work / "calibration.cache").write_text(calibcache.dumps(cache), encoding="utf-8")
        (work / "calibration.json").write_text(
            quantize.ranges_json(cal, calib_set.digest(), len(calib_set.items), len(calib_set.skipped),
                                 str(req.data or calibdata.default_set())), encoding="utf-8")
        new = _install(req.bundle, man, work, figs, cal, excluded, req, len(val_set.items), len(calib_set.items))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CalibrateResult(new, {k: v.to_dict() for k, v in figs.items()}, excluded, time.perf_counter() - t0)


def _gate_message(req: CalibrateRequest, figs: dict[str, gate.Agreement], excluded: list[str]) -> str:
    f = figs["int8"]
    c = figs["int8-cpu"]
    tried = f" after keeping {len(excluded)} layer(s) in FP32" if excluded else ""
    hint = ("try --fallback auto (keeps the most sensitive layers in FP32), " if req.fallback != "auto"
            else f"raise --max-fallback (now {req.max_fallback}), ")
    return (
        f"INT8 accuracy gate failed{tried}: top-1 agreement with FP32 {f.top1_agreement:.3f} (TensorRT Q/DQ) "
        f"and {c.top1_agreement:.3f} (CPU) on {f.images} validation images, below --min-agreement "
        f"{req.min_agreement}; top-5 overlap {f.top5_overlap:.3f}, cosine {f.cosine:.4f}. Nothing was written. "
        f"{hint}calibrate on more images from your camera, or try --method percentile"
    )


def sensitivity(fp32: Path, int8: Path, images: np.ndarray) -> list[str]:
    """Quantized nodes ordered by the error they add: output error minus input error."""
    import onnx

    from edgekit.runners.ort import OrtRunner

    ref_model = onnx.load(str(fp32))
    pre = set(quantize.preprocessing_nodes(ref_model))
    nodes = [n for n in ref_model.graph.node if n.op_type in quantize.TRT_OPS and n.name not in pre]
    q_model = onnx.load(str(int8))
    q_tensors = {o for n in q_model.graph.node for o in n.output}
    wanted = [n.output[0] for n in nodes if n.output[0] in q_tensors]
    producers = {o: n for n in ref_model.graph.node for o in n.output}

    def with_outputs(model: Any, path: Path) -> dict[str, np.ndarray]:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        del m.graph.output[:]
        m.graph.output.extend([onnx.ValueInfoProto(name=t) for t in wanted])
        p = path.with_suffix(".probe.onnx")
        onnx.save(m, str(p))
        try:
            with OrtRunner(p) as r:
                outs = r._session.run(wanted, {r.input_name: images})
        finally:
            p.unlink(missing_ok=True)
        return dict(zip(wanted, outs, strict=True))

    a = with_outputs(ref_model, int8)
    b = with_outputs(q_model, int8)
    err = {t: float(np.linalg.norm(b[t] - a[t]) / max(np.linalg.norm(a[t]), 1e-12)) for t in wanted}

    def upstream_error(tensor: str, seen: set[str]) -> float:
        """Error of the nearest measured tensors feeding ``tensor``."""
        if tensor in err:
            return err[tensor]
        node = producers.get(tensor)
        if node is None or tensor in seen:
            return 0.0
        seen.add(tensor)
        return max((upstream_error(i, seen) for i in node.input), default=0.0)

    added = {}
    for n in nodes:
        out = n.output[0]
        if out in err:
            added[n.name] = err[out] - max((upstream_error(i, set()) for i in n.input), default=0.0)
    return sorted(added, key=lambda k: -added[k])


def _install(path: Path, man: mf.Manifest, work: Path, figs: dict[str, gate.Agreement], cal: quantize.Calibration,
             excluded: list[str], req: CalibrateRequest, n_val: int, n_cal: int) -> mf.Manifest:
    files = [("model.int8.onnx", "onnx", "int8"), ("model.int8-cpu.onnx", "onnx", "int8-cpu"),
             ("calibration.cache", "calibration", None), ("calibration.json", "calibration", None)]
    if (work / "model.fp16.onnx").exists():
        files.append(("model.fp16.onnx", "onnx", "fp16"))
    new = man
    for name, kind, prec in files:
        f = work / name
        new = new.with_artifact(mf.Artifact(name, kind, bundle_mod.sha256(f), f.stat().st_size, prec))
    validation = dict(new.validation)
    validation["int8"] = {
        "method": cal.method, "percentile": cal.percentile, "calibration_images": n_cal,
        "validation_images": n_val, "min_agreement": req.min_agreement,
        "fallback_layers": excluded, "calibration_seconds": round(cal.seconds, 2),
        "tensorrt": figs["int8"].to_dict(), "cpu": figs["int8-cpu"].to_dict(),
    }
    if "fp16" in figs:
        validation["fp16"] = figs["fp16"].to_dict()
    new = replace(new, validation=validation)
    for name, _, _ in files:
        os.replace(work / name, path / name)
    bundle_mod.write_text_atomic(path / mf.MANIFEST, new.to_json())
    return new
