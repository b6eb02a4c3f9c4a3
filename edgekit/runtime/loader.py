"""Load a bundle on the best backend here: TensorRT's engine for this device, else the CPU path
measured fastest (cpu_choice), else ONNX Runtime, always saying why (no torch)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.errors import DeviceError, EdgekitError, UsageError
from edgekit.runtime.classifier import Classifier

BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino")
PRECISIONS = ("auto", "fp32", "fp16", "int8", "int8-cpu", "bf16")


def load(bundle: str | Path | None = None, backend: str = "auto", precision: str = "auto",
         threads: int | None = None, log: Callable[[str], None] | None = None) -> Classifier:
    """Load a bundle on the best backend here, saying which and why (``Classifier.why``).

    ``backend="auto"``: the bundle's TensorRT engine for this device when TensorRT, a GPU and
    a matching engine are all present. Otherwise, on a machine without an NVIDIA GPU, the
    fastest gated CPU path (ONNX Runtime or OpenVINO; FP32, the INT8 CPU form or bf16),
    measured on the first load and cached (:mod:`edgekit.runtime.cpu_choice`); ONNX Runtime alone where
    OpenVINO is not installed or a GPU is present; always with the reason. ``"tensorrt"``,
    ``"onnxruntime"`` and ``"openvino"`` force one, and make what it lacks an error with the
    fix. ``precision="auto"`` takes the fastest model the chosen backend runs well. ``log``
    hears about a measurement while it runs (a few seconds, once).
    """
    from edgekit import profiles as prof_mod

    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    path = Path(bundle) if bundle is not None else bundle_mod.find_latest()
    man = mf.read(path)
    bundle_mod.artifact_path(path, bundle_mod.labels_artifact(path, man))
    try:
        profile, dev = prof_mod.detect()
        unknown = None
    except UsageError as exc:  # a broken user profile: no TensorRT, ONNX Runtime with its defaults
        profile, dev, unknown = None, None, exc
    why_not_trt = ""
    if backend in ("auto", "tensorrt"):
        try:
            if unknown is not None:
                raise unknown
            runner, entry, why = _tensorrt(path, man, precision, profile, dev)
            return Classifier(path, man, runner, str(entry["precision"]), why)
        except EdgekitError as exc:  # missing TensorRT/CUDA, engine mismatch, CUDA init failure
            if backend == "tensorrt":
                raise
            why_not_trt = str(exc)
    runner, prec, why = _cpu(path, man, backend, precision, threads, profile, log or (lambda _: None),
                             device_unknown=unknown is not None, jetson=dev is not None and dev.is_nvidia_board)
    return Classifier(path, man, runner, prec, f"{why_not_trt}; {why}" if why_not_trt else why)


def _cpu(path: Path, man: mf.Manifest, backend: str, precision: str, threads: int | None, profile: Any,
         log: Callable[[str], None], device_unknown: bool = False, jetson: bool = False) -> tuple[Any, str, str]:
    """ONNX Runtime as before where it is asked for, where a GPU is present or may be (its GPU
    providers, a Jetson's path unchanged; a broken profile file says nothing either way) or for
    TensorRT's own forms; otherwise the CPU paths measured. bf16 exists only on OpenVINO."""
    from edgekit.runners.ort import gpu_providers

    if backend == "onnxruntime":
        if precision == "bf16":
            raise UsageError("bf16 runs on OpenVINO only (--backend openvino, or auto with OpenVINO installed)")
        return _onnxruntime(path, man, precision, threads, profile)
    gpu_here = jetson or (profile is not None and profile.kind != "cpu")  # a Jetson no profile names is one still
    if backend == "auto" and precision != "bf16" and (
            gpu_here or device_unknown or precision in ("int8", "fp16") or gpu_providers(gpu_here)):
        return _onnxruntime(path, man, precision, threads, profile)
    if backend == "openvino" and precision in ("int8", "fp16"):
        raise UsageError(f"OpenVINO runs the bundle's fp32, int8-cpu and bf16 paths, not {precision} (TensorRT's "
                         "form); use --precision int8-cpu, or --backend onnxruntime")
    from edgekit.cpuinfo import detect as detect_cpu
    from edgekit.deps import require
    from edgekit.runners import default_threads
    from edgekit.runners.openvino import capabilities
    from edgekit.runtime import cpu_choice

    caps = capabilities()
    if not caps:
        if backend == "openvino" or precision == "bf16":
            require("openvino", "--backend openvino" if backend == "openvino" else "bf16")
            raise DeviceError("OpenVINO is installed but its CPU plugin does not start here (run "
                              "python -c 'import openvino; openvino.Core().available_devices' to see why); "
                              "use --backend onnxruntime")
        runner, prec, why = _onnxruntime(path, man, precision, threads, profile)
        if detect_cpu().arch in ("x86_64", "amd64"):
            from edgekit.deps import available

            why += ("; OpenVINO is installed but its CPU plugin does not start, so only ONNX Runtime ran"
                    if available("openvino") else
                    '; OpenVINO, often faster on x86 CPUs, is not installed (pip install "edgekit[openvino]" '
                    'lets edgekit measure both)')
        return runner, prec, why
    cpu = detect_cpu()
    candidates, notes = cpu_choice.routes(path, man, backend, precision, cpu, caps)
    if not candidates:
        raise UsageError(f"no CPU path can run {precision} for {path}: {'; '.join(notes) or 'nothing allowed'}")
    if threads is None and profile is not None:
        threads = profile_threads(profile)
    threads = threads or default_threads()
    runner, choice = cpu_choice.choose(path, man, candidates, cpu, threads, log)
    return runner, choice.route.precision, choice.why(notes)


def _tensorrt(path: Path, man: mf.Manifest, precision: str, profile: Any, dev: Any) -> tuple[Any, dict[str, Any], str]:
    if profile.kind == "cpu":
        raise UsageError("no NVIDIA GPU or Jetson detected, so no TensorRT")
    from edgekit.trt import runner as trt_runner

    if not man.engines:
        raise UsageError(f"{path} has no TensorRT engine (make one here: edgekit build {path})")
    from edgekit.trt.parse import load_trt

    trt = load_trt()
    here = trt_runner.here(trt, profile, dev)
    entry = trt_runner.pick_engine(man.engines, precision, here)
    if entry is None:
        have = sorted({str(e.get("precision")) for e in man.engines})
        raise UsageError(f"{path} has no {precision} engine (it has {', '.join(have)}); "
                         f"edgekit build {path} --{precision}")
    trt_runner.check_engine(entry, here, path)
    plan = bundle_mod.engine_path(path, entry)
    if plan is None:
        raise UsageError(f"{path / str(entry['path'])} is missing or changed since it was built; "
                         f"rebuild: edgekit build {path} --force")
    runner = trt_runner.TrtRunner(plan, entry)
    return runner, entry, f"{entry['path']} matches this {profile.name} and {trt.__name__} {trt.__version__}"


def _onnxruntime(path: Path, man: mf.Manifest, precision: str, threads: int | None,
                 profile: Any) -> tuple[Any, str, str]:
    from edgekit.cpuinfo import detect as detect_cpu
    from edgekit.runners.ort import OrtRunner, gpu_providers

    gpu = gpu_providers(profile is not None and profile.kind != "cpu")
    cpu = detect_cpu()
    # 8-bit CPU forms (bundles calibrated before the 7-bit form) saturate in this CPU's u8 x s8 kernels
    unsafe_cpu_form = cpu.saturates_u8s8 and not mf.seven_bit_weights(man)
    why = ""
    if precision == "auto":
        if gpu and man.artifact("onnx", "fp16") is not None:
            precision, why = "fp16", f"FP16 model on {gpu[0]}"
        elif man.artifact("onnx", "int8-cpu") is not None and not gpu and not unsafe_cpu_form:
            precision, why = "int8-cpu", "the fastest model in the bundle for a CPU"
        elif man.artifact("onnx", "int8-cpu") is not None and not gpu:
            precision, why = "fp32", (f"FP32 model: this bundle's CPU INT8 model has 8-bit weights, which this CPU's "
                                      f"integer kernels ({cpu.kind}) saturate; edgekit calibrate {path} writes "
                                      "the 7-bit form that is safe here")
        else:
            precision, why = "fp32", "FP32 model (the bundle has no faster one for this backend)"
    elif precision == "int8-cpu" and unsafe_cpu_form:
        why = (f"int8-cpu as asked, but its 8-bit weights saturate in this CPU's integer kernels ({cpu.kind}) and "
               f"lose accuracy; edgekit calibrate {path} writes the 7-bit form that is safe here")
    art = man.artifact("onnx", precision)
    if art is None:
        have = sorted({a.precision for a in man.artifacts if a.kind == "onnx" and a.precision})
        raise UsageError(f"{path} has no {precision} model; it has: {', '.join(have)}")
    onnx_file = bundle_mod.artifact_path(path, art)
    if threads is None and profile is not None:
        threads = profile_threads(profile)
    # the CPU-tuned uint8 model stays on the CPU; the rest goes to a GPU provider when there is one
    providers = ["CPUExecutionProvider"] if precision == "int8-cpu" or not gpu else gpu + ["CPUExecutionProvider"]
    # the TensorRT form on a CPU: its int8 x int8 arithmetic is kept as float operations where this
    # CPU's fused kernels would saturate (x86 without VNNI), so it computes what TensorRT computes
    fuse = not (precision == "int8" and not gpu and cpu.saturates_u8s8)
    if not fuse:
        why = why or (f"int8 (the TensorRT form) as asked, with Q/DQ run as float operations: this CPU's fused "
                      f"integer kernels ({cpu.kind}) would saturate; int8-cpu is the fast form for a CPU")
    runner = OrtRunner(onnx_file, threads=threads, providers=providers, fuse_qdq=fuse)
    return runner, precision, "ONNX Runtime: " + (why or f"{precision} as asked")


def profile_threads(profile: Any) -> int | None:
    """ONNX Runtime threads from the profile, at most this machine's cores less one."""
    if profile.cpu_threads is None:
        return None
    return max(1, min(profile.cpu_threads, (os.cpu_count() or 2) - 1))
