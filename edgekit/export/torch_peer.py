"""`edgekit bench --compare torch` (desktop tier): the bundle's model rebuilt in PyTorch from the weights
it records, proved to be the same model (its logits against ONNX Runtime FP32), and timed in the same
run: eager FP32 on the CPU; on a GPU, FP16 eager and FP16 replayed as a CUDA graph."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import manifest as mf
from edgekit.callbacks import Log
from edgekit.errors import UsageError
from edgekit.runtime.bench import Peer
from edgekit.runtime.timing import Row, Settings, batch_input, measure, row_from, time_runner


def torch_weights(man: mf.Manifest) -> str:
    """The ``weights`` argument that rebuilds the bundle's model (published name or random)."""
    from edgekit.zoo import get_spec

    spec = get_spec(man.model.name)
    desc = man.model.weights
    if desc.startswith("random"):
        return "random"
    for src in spec.weights:
        if desc == f"{src.provider}:{src.ident}":
            return src.name
    candidate = Path(desc.split(" ")[-1])
    if candidate.is_file():
        return str(candidate)
    raise UsageError(f"cannot tell which weights made this bundle ({desc!r}); pass --weights PATH to --compare torch")


class TorchRunner:
    """PyTorch eager on the same weights, with the same in-graph preprocessing as the ONNX model."""

    backend = "torch"

    def __init__(self, path: Path, man: mf.Manifest, weights: str | None = None, threads: int | None = None) -> None:
        from edgekit.deps import require
        from edgekit.export.torch_onnx import wrap
        from edgekit.zoo import get_spec
        from edgekit.zoo.weights import build

        self.torch = require("torch", "the PyTorch comparison")
        if threads:
            self.torch.set_num_threads(threads)
        spec = get_spec(man.model.name)
        w = weights or torch_weights(man)
        model, _ = build(spec, w, man.preprocess.height, man.model.num_classes)
        self.module = wrap(model, man.preprocess, man.input.dtype != "uint8")
        self.description = f"PyTorch {self.torch.__version__} eager ({self.torch.get_num_threads()} threads)"

    def infer(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            out: np.ndarray = self.module(self.torch.from_numpy(x)).numpy()
        return out


def check_same_model(path: Path, man: mf.Manifest, torch_runner: TorchRunner, threads: int | None) -> float:
    """Max relative logit difference between PyTorch and ONNX Runtime FP32 on real photos."""
    from edgekit import bundle as bundle_mod
    from edgekit.runners.ort import OrtRunner

    art = man.artifact("onnx", "fp32")
    if art is None:
        raise UsageError(f"{path} has no fp32 model to check the PyTorch model against")
    x = batch_input(path, man, 2)
    with OrtRunner(bundle_mod.artifact_path(path, art), threads=threads) as ort_runner:
        want = ort_runner.infer(x)
    got = torch_runner.infer(x)
    rel = float(np.abs(got - want).max() / max(1e-12, float(np.abs(want).max())))
    if rel > 1e-3:
        raise UsageError(f"the PyTorch model rebuilt for {path} does not reproduce its ONNX model (max relative "
                         f"difference {rel:.2g}); pass the weights that made the bundle with --weights PATH")
    return rel


def peer(weights: str | None = None) -> Peer:
    """bench_bundle's ``peer``: the torch rows, with these weights (None: those the bundle records)."""
    return lambda path, man, batches, threads, settings, log: torch_rows(path, man, batches, threads, weights,
                                                                         settings, log)


def torch_rows(path: Path, man: mf.Manifest, batches: Sequence[int], threads: int | None, weights: str | None,
               s: Settings, log: Log) -> list[Row]:
    runner = TorchRunner(path, man, weights, threads)
    rel = check_same_model(path, man, runner, threads)
    rows = time_runner(runner, path, man, "torch", "fp32", batches, s, log,
                       note=f"{runner.description}; logits match ONNX Runtime to {rel:.1e}")
    torch = runner.torch
    if torch.cuda.is_available():
        rows += torch_cuda_rows(runner, path, man, batches, s, log)
    return rows


def torch_cuda_rows(runner: TorchRunner, path: Path, man: mf.Manifest, batches: Sequence[int], s: Settings,
                    log: Log) -> list[Row]:
    """PyTorch on the GPU: FP16 eager (autocast) and FP16 replayed as a CUDA graph."""
    torch = runner.torch
    module = runner.module.cuda()
    name = torch.cuda.get_device_name()
    rows = []
    for b in batches:
        x = torch.from_numpy(batch_input(path, man, b)).cuda()
        for label, fn in (("fp16", _eager(torch, module, x)), ("fp16-cudagraph", _graph(torch, module, x))):
            log(f"torch cuda {label} batch {b}")
            torch.cuda.reset_peak_memory_stats()
            times, device_ms = _timed_cuda(torch, fn, s)
            rows.append(row_from(times, model=man.model.name, backend="torch-cuda", precision=label, batch=b,
                                 device=name, device_ms=device_ms[s.warmup:],
                                 gpu_mib=torch.cuda.max_memory_allocated() / 2**20, note="PyTorch, autocast"))
    module.cpu()
    return rows


def _eager(torch: Any, module: Any, x: Any) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            module(x)
        torch.cuda.synchronize()

    return run


def _graph(torch: Any, module: Any, x: Any) -> Callable[[], None]:
    """The model captured once as a CUDA graph (static input), replayed per call."""
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
        with torch.cuda.stream(side):
            for _ in range(3):
                module(x)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            module(x)

    def run() -> None:
        graph.replay()
        torch.cuda.synchronize()

    return run


def _timed_cuda(torch: Any, fn: Callable[[], None], s: Settings) -> tuple[list[float], list[float]]:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    device_ms: list[float] = []

    def timed() -> None:
        start.record()
        fn()
        end.record()
        end.synchronize()
        device_ms.append(start.elapsed_time(end))

    return measure(timed, s), device_ms


# ------------------------------------------------------------------ the command
