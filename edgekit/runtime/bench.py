"""`edgekit bench`: latency percentiles, throughput and memory, measured the same way everywhere.

Each configuration (backend, precision, batch) is warmed up, then timed until it has both a
minimum number of runs and a minimum duration. Wall time per call on the host always; on a
GPU, device time from CUDA events besides. Peak resident memory per configuration (the
kernel's high-water mark, reset before each); GPU memory where there is one. Inputs are real
photographs prepared exactly as the runtime prepares camera frames.

``--compare torch`` rebuilds the PyTorch model with the bundle's weights, proves it is the
same model (its logits match ONNX Runtime FP32), and times it in the same run. That is the
desktop tier's export.torch_peer, which the command hands in as ``peer``: this module never
imports torch or the export package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgekit import manifest as mf
from edgekit.callbacks import Log
from edgekit.errors import UsageError
from edgekit.runtime.timing import (
    Row,
    Settings,
    batch_input,
    batches_for,
    measure,
    reset_peak_memory,
    row_from,
    time_runner,
)


class Peer(Protocol):
    """Another framework's rows for the same bundle, timed in the same run (export.torch_peer.peer)."""

    def __call__(self, path: Path, man: mf.Manifest, batches: Sequence[int], threads: int | None,
                 settings: Settings, log: Log) -> list[Row]: ...


def onnxruntime_rows(path: Path, man: mf.Manifest, precisions: Sequence[str] | None, batches: Sequence[int],
                     threads: int | None, s: Settings, log: Log) -> list[Row]:
    from edgekit import bundle as bundle_mod
    from edgekit.runners.ort import OrtRunner

    rows = []
    arts = [a for a in man.artifacts if a.kind == "onnx" and a.precision and (
        not precisions or a.precision in precisions)]
    for art in arts:
        with OrtRunner(bundle_mod.artifact_path(path, art), threads=threads) as runner:
            rows += time_runner(runner, path, man, "onnxruntime", str(art.precision), batches, s, log)
    return rows


def openvino_rows(path: Path, man: mf.Manifest, precisions: Sequence[str] | None, batches: Sequence[int],
                  threads: int | None, s: Settings, log: Log,
                  check: Callable[[str, Any], None] | None = None) -> tuple[list[Row], str]:
    """OpenVINO on the bundle's FP32 model (f32, and bf16 where the CPU has it) and its INT8 CPU
    form; ([], why) when OpenVINO is not installed. ``check(precision, runner)`` runs on each
    runner before it is timed (the suite's agreement figures), so nothing compiles twice."""
    from edgekit import bundle as bundle_mod
    from edgekit.runners.openvino import OpenVinoRunner, capabilities

    caps = capabilities()
    if not caps:
        return [], 'OpenVINO is not installed (pip install "edgekit[openvino]"): no OpenVINO rows'
    rows: list[Row] = []
    for prec, model, hint in (("fp32", "fp32", "f32"), ("bf16", "fp32", "bf16"), ("int8-cpu", "int8-cpu", "f32")):
        art = man.artifact("onnx", model)
        if art is None or (precisions and prec not in precisions) or (hint == "bf16" and "BF16" not in caps):
            continue
        with OpenVinoRunner(bundle_mod.artifact_path(path, art), hint, threads) as runner:
            if check is not None:
                check(prec, runner)
            rows += time_runner(runner, path, man, "openvino", prec, batches, s, log)
    return rows, ""


def auto_rows(path: Path, man: mf.Manifest, batches: Sequence[int], threads: int | None, s: Settings,
              log: Log) -> tuple[list[Row], str]:
    """The path ``edgekit.load`` chooses here (backend and precision "auto"), timed like the others."""
    from edgekit.runners import default_threads
    from edgekit.runtime.loader import load

    with load(path, threads=threads or default_threads(), log=log) as clf:
        rows = time_runner(clf.runner, path, man, f"auto:{clf.backend}", clf.precision, batches, s, log)
        return rows, f"auto (the default backend) chose {clf.backend} {clf.precision}: {clf.why}"


def _cpu_only() -> bool:
    """No NVIDIA GPU or Jetson here (a broken profile file says nothing either way: not CPU-only)."""
    from edgekit import profiles as prof_mod

    try:
        profile, dev = prof_mod.detect()
    except UsageError:
        return False
    return profile.kind == "cpu" and not dev.is_nvidia_board


def standing(rows: Sequence[Row]) -> list[str]:
    """The auto row against ONNX Runtime FP32, ONNX Runtime's INT8 CPU form and OpenVINO's best, per batch."""
    out = []
    for r in rows:
        if not r.backend.startswith("auto:"):
            continue
        ort = [x for x in rows if x.backend == "onnxruntime"]
        peers = [("ONNX Runtime fp32", [x for x in ort if x.precision == "fp32"]),
                 ("ONNX Runtime int8-cpu", [x for x in ort if x.precision == "int8-cpu"]),
                 ("OpenVINO's best", [x for x in rows if x.backend == "openvino"])]
        parts = []
        for name, cands in peers:
            same = [x for x in cands if x.batch == r.batch]
            if same:
                best = min(same, key=lambda x: x.p50_ms)
                label = f"{name} ({best.precision})" if name.startswith("OpenVINO") else name
                parts.append(f"{best.p50_ms / r.p50_ms:.2f}x {label}")
        if parts:
            out.append(f"auto ({r.backend[5:]} {r.precision}) at batch {r.batch}: " + ", ".join(parts)
                       + " (above 1: auto is faster)")
    return out


def tensorrt_rows(path: Path, man: mf.Manifest, precisions: Sequence[str] | None, batches: Sequence[int],
                  s: Settings, log: Log) -> tuple[list[Row], str]:
    """Rows for the engines that fit this device; ('', reason) when there is no TensorRT here."""
    from edgekit import bundle as bundle_mod
    from edgekit import profiles as prof_mod
    from edgekit.errors import EdgekitError
    from edgekit.trt.runner import TrtRunner, check_engine, here

    profile, dev = prof_mod.detect()
    if profile.kind == "cpu":
        return [], "no NVIDIA GPU here"
    if not man.engines:
        return [], f"the bundle has no engine (edgekit build {path})"
    try:
        from edgekit.trt.parse import load_trt

        trt = load_trt()
    except EdgekitError as exc:
        return [], str(exc)
    this = here(trt, profile, dev)
    rows: list[Row] = []
    skipped = []
    for entry in man.engines:
        if precisions and entry.get("precision") not in precisions:
            continue
        try:
            check_engine(entry, this, path)
        except EdgekitError as exc:
            skipped.append(str(exc))
            continue
        plan = bundle_mod.engine_path(path, entry)
        if plan is None:
            skipped.append(f"{entry['path']} is missing or changed since it was built")
            continue
        runner = TrtRunner(plan, entry)
        lo, hi = int(entry["batch"]["min"]), int(entry["batch"]["max"])
        try:
            for b in batches:
                if not lo <= b <= hi:
                    skipped.append(f"{entry['path']}: batch {b} outside its profile {lo}:{hi}")
                    continue
                log(f"tensorrt {entry['precision']} batch {b}")
                x = batch_input(path, man, b)
                reset_peak_memory()
                times, device_ms = _timed_trt(runner, x, s)
                free1, total = runner.cuda.memory()
                rows.append(row_from(times, model=man.model.name, backend="tensorrt", precision=str(entry["precision"]),
                                     batch=b, device=runner.cuda.device_name, device_ms=device_ms[s.warmup:],
                                     gpu_mib=(total - free1) / 2**20, note=runner.description))
        finally:
            runner.close()
    return rows, "; ".join(skipped)


def _timed_trt(runner: Any, x: np.ndarray, s: Settings) -> tuple[list[float], list[float]]:
    device_ms: list[float] = []

    def once() -> None:
        runner.infer(x)
        if runner.last_device_ms is not None:
            device_ms.append(runner.last_device_ms)

    return measure(once, s), device_ms


BENCH_BACKENDS = ("all", "auto", "onnxruntime", "openvino", "tensorrt")


def bench_bundle(path: Path, precisions: Sequence[str] | None = None, backend: str = "all",
                 batches: Sequence[int] = (1,), threads: int | None = None, peer: Peer | None = None,
                 settings: Settings = Settings(), log: Log = lambda _: None) -> tuple[list[Row], list[str]]:
    """Rows for every precision/backend in the bundle (or those named), and notes on what was skipped.

    ``peer``: rows from another framework timed in the same run, first (``export.torch_peer.peer``)."""
    if backend not in BENCH_BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(BENCH_BACKENDS)}")
    if not batches or any(b < 1 for b in batches):
        raise UsageError(f"batch sizes must be positive integers, got {list(batches)}")
    man = mf.read(path)
    kept, why = batches_for(man, batches)
    notes = [why] if why else []
    if not kept:
        raise UsageError(f"{why}; bench it with --batch {man.input.shape[0]} or export with a dynamic batch")
    rows: list[Row] = []
    if peer is not None:
        rows += peer(path, man, kept, threads, settings, log)
    if backend in ("all", "onnxruntime"):
        rows += onnxruntime_rows(path, man, precisions, kept, threads, settings, log)
    if backend in ("all", "openvino"):
        ov_rows, why_not = openvino_rows(path, man, precisions, kept, threads, settings, log)
        rows += ov_rows
        if why_not:
            if backend == "openvino":
                raise UsageError(why_not.replace(": no OpenVINO rows", ""))
            notes.append(why_not)
    if backend == "auto" and precisions:
        raise UsageError("--backend auto times the path edgekit.load chooses, precision included; drop --precision, "
                         "or give --backend onnxruntime or openvino with it")
    if (backend == "auto" or (backend == "all" and _cpu_only())) and not precisions:
        # with a GPU, auto is the TensorRT engine timed below: "all" does not time it twice (minutes on a Nano)
        auto, chose = auto_rows(path, man, kept, threads, settings, log)
        rows += auto
        notes.append(chose)
    if backend in ("all", "tensorrt"):
        trt_rows, why_not = tensorrt_rows(path, man, precisions, kept, settings, log)
        rows += trt_rows
        if why_not:
            if backend == "tensorrt" and not trt_rows:
                raise UsageError(f"no TensorRT measurement possible: {why_not}")
            notes.append(f"TensorRT: {why_not}")
    if precisions and not any(r.precision in precisions for r in rows):
        have = sorted({a.precision for a in man.artifacts if a.kind == "onnx" and a.precision})
        raise UsageError(f"{path} has no {', '.join(precisions)} model; it has: {', '.join(have)}")
    rows = with_ratios(rows)
    return rows, notes + standing(rows)


def reference(rows: Sequence[Row], r: Row) -> Row | None:
    """What a row is compared with: PyTorch FP32 of the same batch, else ONNX Runtime FP32."""
    for backend in ("torch", "onnxruntime"):
        for ref in rows:
            if ref.backend == backend and ref.precision == "fp32" and ref.batch == r.batch and ref.model == r.model:
                return ref
    return None


def with_ratios(rows: list[Row]) -> list[Row]:
    out = []
    for r in rows:
        ref = reference(rows, r)
        if ref is not None and ref is not r:
            r = replace(r, note=(r.note + "; " if r.note else "") + f"{ref.p50_ms / r.p50_ms:.2f}x {ref.backend} fp32")
        out.append(r)
    return out


def speedup(rows: Sequence[Row], r: Row) -> str:
    ref = reference(rows, r)
    return "1.00x" if ref is r else (f"{ref.p50_ms / r.p50_ms:.2f}x" if ref else "")


def table(rows: Sequence[Row]) -> str:
    head = (f"{'backend':<14} {'precision':<15} {'batch':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
            f"{'img/s':>8} {'gpu ms':>7} {'peak MiB':>9} {'speed-up':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.backend:<14} {r.precision:<15} {r.batch:>5} {r.p50_ms:>8.2f} {r.p90_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.throughput:>8.1f} {(f'{r.device_p50_ms:.2f}' if r.device_p50_ms is not None else '-'):>7} "
            f"{(f'{r.host_peak_mib:.0f}' if r.host_peak_mib is not None else '-'):>9} {speedup(rows, r):>8}")
    return "\n".join(lines)


def to_json(path: Path, rows: Sequence[Row], notes: Sequence[str]) -> str:
    import platform

    from edgekit.cpuinfo import detect

    return json.dumps({"bundle": str(path), "machine": {"cpu": platform.processor() or platform.machine(),
                                                        "cpu_kind": detect().describe(), "cores": os.cpu_count()},
                       "rows": [r.to_dict() for r in rows], "notes": list(notes)}, indent=2)
