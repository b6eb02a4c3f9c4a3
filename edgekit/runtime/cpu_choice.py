"""The fastest gated CPU path for a bundle on this CPU: ONNX Runtime or OpenVINO, at FP32,
INT8 (the bundle's CPU form) or bf16, decided by a short measurement that is cached (cpu tier).

Which one wins depends on the CPU, not on a rule that holds everywhere: on an AVX-512 VNNI
CPU ONNX Runtime's INT8 and OpenVINO's are close, on an AVX2-only CPU OpenVINO's INT8 is far
ahead, and bf16 exists only on CPUs with AVX512-BF16 or AMX. So the first load of a bundle
on a CPU measures the candidates side by side:

- candidates are only paths that passed the accuracy gate: FP32 always; the INT8 CPU form
  when the bundle was calibrated (and, on a CPU whose integer kernels saturate, only in its
  7-bit form); bf16 when the CPU has it and the bundle's bf16 figures passed the gate;
- each is compiled (its start-up time is kept), checked against ONNX Runtime FP32 on the
  shipped photographs (an FP32 path must agree to PARITY_RTOL; a reduced one must give finite
  logits with a cosine no more than COSINE_MARGIN below the gate's own figure for it, and at
  least MIN_COSINE: the gate's statistics come from calibration, this catches an engine that
  computes the file differently), then timed at the bundle's smallest batch (a multi-camera
  run's larger batch is not measured) in
  interleaved rounds, so a noisy neighbour slows them all alike: each round runs every path
  untimed for SETTLE_S, then BLOCK timed calls. (OpenVINO's first three calls after ONNX
  Runtime's ran at 1.7x its own time on bn_inception; timing them made ONNX Runtime's INT8
  look as fast as OpenVINO's, 12.9 against 12.6 ms, where each alone took 12.7 and 8.2 ms.)
- the result is kept (edgekit.runtime.cpu_cache: per bundle, CPU, cores and library versions), so later
  loads skip the measurement; processes starting together measure once.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.errors import UsageError
from edgekit.runtime import cpu_cache
from edgekit.runtime.cpu_routes import NAMES, PRECISIONS, Choice, Route, Trial

__all__ = ["NAMES", "PRECISIONS", "Choice", "Route", "Trial", "choose", "routes", "measure"]

PARITY_RTOL = 1e-3  # relative L2 error of an FP32 path's logits against ONNX Runtime FP32
MIN_COSINE = 0.98  # a reduced-precision path: below this it is not the model the gate judged
COSINE_MARGIN = 0.01  # ... nor this far below the gate's own cosine for it
MIN_ROUNDS, MAX_ROUNDS, MIN_SECONDS, BLOCK, SETTLE_S = 3, 12, 0.5, 2, 0.06


# ------------------------------------------------------------------ which paths may run


def routes(path: Path, man: mf.Manifest, backend: str, precision: str, cpu: Any,
           ov_caps: frozenset[str]) -> tuple[list[Route], list[str]]:
    """The gated paths for ``backend`` ("auto", "openvino") and ``precision`` ("auto" or one),
    and a note for each path this CPU could run but the bundle does not allow."""
    backends = ["onnxruntime", "openvino"] if backend == "auto" else [backend]
    if ov_caps == frozenset():
        backends = [b for b in backends if b != "openvino"]
    wanted = ["fp32", "int8-cpu", "bf16"] if precision == "auto" else [precision]
    notes: list[str] = []
    out: list[Route] = []
    for prec in wanted:
        allowed, why = _allowed(path, man, prec, cpu, ov_caps, asked=precision != "auto")
        if why and (allowed or precision != "auto" or prec != "bf16" or "BF16" in ov_caps):
            notes.append(why)
        if not allowed:
            continue
        out += [Route(b, prec) for b in backends if not (prec == "bf16" and b != "openvino")]
    return out, notes


def _allowed(path: Path, man: mf.Manifest, prec: str, cpu: Any, ov_caps: frozenset[str],
             asked: bool) -> tuple[bool, str]:
    """(may run, note): ``asked`` paths run with a note where auto would leave them out."""
    if prec == "fp32":
        return True, ""
    if prec == "int8-cpu":
        if man.artifact("onnx", "int8-cpu") is None:
            return False, "" if not asked else f"{path} has no int8-cpu model (edgekit calibrate {path})"
        if cpu.saturates_u8s8 and not mf.seven_bit_weights(man):
            why = (f"this bundle's CPU INT8 model has 8-bit weights, which this CPU's integer kernels ({cpu.kind}) "
                   f"saturate; edgekit calibrate {path} writes the 7-bit form that is safe here")
            return asked, ("int8-cpu as asked, but " if asked else "int8-cpu left out: ") + why
        return True, ""
    if prec == "bf16":
        if "BF16" not in ov_caps:
            return False, ("bf16 needs OpenVINO on a CPU with AVX512-BF16 or AMX; "
                           + ("OpenVINO is not installed" if not ov_caps else f"this one ({cpu.kind}) has neither"))
        fig = man.validation.get("bf16")
        status = fig.get("status") if isinstance(fig, dict) else None
        if status in ("pass", "undecided"):
            return True, ""
        why = (f"its bf16 figures failed the accuracy gate ({_agreement(fig)})" if status == "fail"
               else f"the bundle has no bf16 figures (edgekit calibrate {path} judges bf16)")
        return asked, ("bf16 as asked, but " if asked else "bf16 left out: ") + why
    raise UsageError(f"the CPU paths run fp32, int8-cpu and bf16, not {prec!r}")


def _agreement(fig: Any) -> str:
    try:
        return f"top-1 agreement {float(fig['top1_agreement']):.3f}"
    except (TypeError, KeyError, ValueError):
        return "unreadable figures"


# ------------------------------------------------------------------ opening and measuring


def open_route(path: Path, man: mf.Manifest, route: Route, threads: int) -> Any:
    art = man.artifact("onnx", route.model)
    if art is None:
        raise UsageError(f"{path} has no {route.model} model")
    onnx_file = bundle_mod.artifact_path(path, art)
    if route.backend == "openvino":
        from edgekit.runners.openvino import OpenVinoRunner

        return OpenVinoRunner(onnx_file, "bf16" if route.precision == "bf16" else "f32", threads)
    from edgekit.runners.ort import OrtRunner

    return OrtRunner(onnx_file, threads=threads)


def _photos(path: Path, man: mf.Manifest) -> np.ndarray:
    """The shipped photographs, prepared as the runtime prepares camera frames."""
    from edgekit.runtime import timing

    return timing.prepare(path, man, timing.photos(len(timing._sample_frames())))


def _batch(man: mf.Manifest) -> int:
    first = man.input.shape[0]
    return first if isinstance(first, int) else 1


def _run(runner: Any, x: np.ndarray, batch: int) -> np.ndarray:
    from edgekit.quant.gate import run_all

    return run_all(runner, x, batch, static=batch > 1)


def cosine_floor(man: mf.Manifest, route: Route) -> float:
    """The least cosine to FP32 a reduced path may show on the photographs: the gate's own figure
    for it (its mean over the validation images) less COSINE_MARGIN, and never below MIN_COSINE."""
    fig = man.validation.get("bf16") if route.precision == "bf16" else (man.validation.get("int8") or {}).get("cpu")
    try:
        return max(MIN_COSINE, float(fig["cosine"]) - COSINE_MARGIN)  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return MIN_COSINE


def _check(route: Route, ref: np.ndarray, got: np.ndarray, floor: float = MIN_COSINE) -> tuple[float, float, int, str]:
    from edgekit.quant.gate import agreement, top1_matches

    fig = agreement(ref, got)
    if fig.nonfinite:
        return float("inf"), 0.0, 0, "inf/NaN logits"
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    rel = float((np.linalg.norm(got64 - ref64, axis=1) / np.maximum(np.linalg.norm(ref64, axis=1), 1e-12)).max())
    cos, top1 = fig.cosine, int(top1_matches(ref, got).sum())
    if route.precision == "fp32" and rel > PARITY_RTOL:
        return rel, cos, top1, f"FP32 logits differ from ONNX Runtime's by {rel:.1e} (limit {PARITY_RTOL:.0e})"
    if route.precision != "fp32" and cos < floor:
        return rel, cos, top1, (f"cosine {cos:.4f} against FP32 is below {floor:.4f} (the accuracy gate's figure "
                                f"less {COSINE_MARGIN}): not the model the gate judged")
    return rel, cos, top1, ""


def measure(path: Path, man: mf.Manifest, candidates: list[Route], threads: int,
            log: Callable[[str], None]) -> tuple[list[Trial], dict[Route, Any]]:
    """Open, check and time every candidate; returns the trials and the runners still open
    (the caller keeps the winner and closes the rest)."""
    from edgekit.runners.ort import OrtRunner
    from edgekit.runners.shapes import check_input_size, runner_input_shape

    batch = _batch(man)
    fp32 = man.artifact("onnx", "fp32")
    if fp32 is None:
        raise UsageError(f"{path} has no FP32 model to check the CPU paths against; re-export the bundle")
    runners: dict[Route, Any] = {}
    checks: dict[Route, tuple[float, tuple[float, float, int, str]]] = {}
    try:
        with OrtRunner(bundle_mod.artifact_path(path, fp32), threads=threads) as ref_runner:
            # a manifest whose preprocessing disagrees with the model: the bundle's error, before any frame
            check_input_size(path, man, runner_input_shape(ref_runner))
            x = _photos(path, man)
            ref = _run(ref_runner, x, batch)
        for route in candidates:
            t0 = time.perf_counter()
            try:
                runner = open_route(path, man, route, threads)
            except UsageError as exc:
                checks[route] = (0.0, (float("inf"), 0.0, 0, str(exc)[:160]))
                continue
            startup = time.perf_counter() - t0
            got = _run(runner, x, batch)
            checks[route] = (startup, _check(route, ref, got, cosine_floor(man, route)))
            if checks[route][1][3]:
                runner.close()
            else:
                runners[route] = runner
        times: dict[Route, list[float]] = {r: [] for r in runners}
        one = x[:batch] if len(x) >= batch else np.repeat(x[:1], batch, 0)
        for runner in runners.values():  # warm-up: first calls allocate and pick kernels
            runner.infer(one)
            runner.infer(one)
        t_start = time.perf_counter()
        rounds = 0
        order = list(runners)
        while len(order) > 1 and (rounds < MIN_ROUNDS or time.perf_counter() - t_start < MIN_SECONDS) \
                and rounds < MAX_ROUNDS:
            for route in order[rounds % len(order):] + order[:rounds % len(order)]:
                settle = time.perf_counter() + SETTLE_S  # untimed: a runtime's first calls after the other's run slow
                runners[route].infer(one)
                while time.perf_counter() < settle:
                    runners[route].infer(one)
                for _ in range(BLOCK):
                    t0 = time.perf_counter()
                    runners[route].infer(one)
                    times[route].append((time.perf_counter() - t0) * 1000.0)
            rounds += 1
        if len(order) == 1:
            t0 = time.perf_counter()
            runners[order[0]].infer(one)
            times[order[0]].append((time.perf_counter() - t0) * 1000.0)
    except BaseException:
        for r in runners.values():
            r.close()
        raise
    trials = []
    for route in candidates:
        startup, (rel, cos, top1, failed) = checks[route]
        ms = statistics.median(times[route]) if route in times and times[route] else None
        trials.append(Trial(route, round(startup, 3), None if ms is None else round(ms, 3), rel, round(cos, 6),
                            top1, len(x), failed))
    log(" ".join(f"{t.route.name} {t.ms:.1f} ms" if t.ms is not None else f"{t.route.name} left out ({t.failed})"
                 for t in trials))
    return trials, runners


# ------------------------------------------------------------------ choosing


def choose(path: Path, man: mf.Manifest, candidates: list[Route], cpu: Any, threads: int,
           log: Callable[[str], None]) -> tuple[Any, Choice]:
    """The open runner of the fastest candidate that passes its check, and the choice."""
    key = cpu_cache.cache_key(man, candidates, cpu, threads)
    opened = _open_cached(path, man, key, candidates, threads)
    if opened is not None:
        return opened
    with cpu_cache.measuring(key, log) as where:
        opened = _open_cached(path, man, key, candidates, threads)  # measured by the process we waited for
        if opened is not None:
            return opened
        if len(candidates) > 1:
            log(f"measuring {len(candidates)} CPU paths for this bundle on this CPU " + (
                f"(once: the result is kept in {where})" if where else "(not kept: see the note below)"))
        trials, runners = measure(path, man, candidates, threads, log)
        ok = [t for t in trials if t.ms is not None]
        if not ok:
            raise UsageError(f"no CPU path could run {path}: "
                             + "; ".join(f"{t.route.name}: {t.failed}" for t in trials)
                             + " (the bundle's files may be damaged: edgekit inspect checks them)")
        best = min(ok, key=lambda t: t.ms or 0.0)
        for route, runner in runners.items():
            if route != best.route:
                runner.close()
        choice = Choice(best.route, tuple(trials), _batch(man), threads, key["cpu"],
                        time.strftime("%Y-%m-%d %H:%M"), False)
        try:
            not_kept = cpu_cache.write_cached(key, choice)
        except BaseException:  # Ctrl-C while writing: the chosen runner goes too
            runners[best.route].close()
            raise
    if not_kept:
        log(f"note: {not_kept}")
    return runners[best.route], choice


def _open_cached(path: Path, man: mf.Manifest, key: dict[str, Any], candidates: list[Route],
                 threads: int) -> tuple[Any, Choice] | None:
    cached = cpu_cache.read_cached(key, candidates)
    if cached is None:
        return None
    cached = replace(cached, batch=_batch(man), threads=threads, cpu=key["cpu"])
    try:
        return open_route(path, man, cached.route, threads), cached
    except UsageError:
        return None  # the file changed under the same sha256 cannot happen; an OpenVINO that broke can: measure
