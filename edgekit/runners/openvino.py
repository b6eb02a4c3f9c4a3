"""OpenVINO runner (cpu tier, optional): the bundle's ONNX files on OpenVINO's CPU plugin.

On x86 CPUs OpenVINO turns the INT8 model's Q/DQ pairs into oneDNN's integer kernels and runs
an FP32 model in bf16 where the CPU has AVX512-BF16 or AMX; on many CPUs that is faster than
ONNX Runtime on the same file (README, "Which CPU path"). It reads the ONNX files as they are:
no conversion step, nothing written into the bundle.

``hint`` is OpenVINO's INFERENCE_PRECISION_HINT: "f32" computes what ONNX Runtime computes
(OpenVINO's default on a bf16 CPU is bf16, so f32 is always set unless bf16 is asked for);
"bf16" rounds every float tensor to bfloat16 (8-bit mantissa) with float32 sums, which the
accuracy gate judges like INT8. The INT8 model runs with "f32" for the layers left in float,
so it computes what the gate simulated.

One compiled model is shared; OpenVINO's infer requests are not thread-safe, so each calling
thread gets its own (created on its first call, all released by ``close``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.deps import require
from edgekit.errors import UsageError
from edgekit.runners import default_threads

HINTS = ("f32", "bf16")


def capabilities() -> frozenset[str]:
    """What OpenVINO's CPU plugin says this CPU can do ("FP32", "BF16", "INT8", ...); empty when
    OpenVINO is not installed or cannot open the CPU plugin."""
    try:
        import openvino as ov

        return _capabilities_of(ov.Core())
    except Exception:  # ImportError, or a plugin that fails to load: no OpenVINO path here
        return frozenset()


def _capabilities_of(core: Any) -> frozenset[str]:
    return frozenset(str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def version() -> str | None:
    try:
        import openvino as ov
    except ImportError:
        return None
    return str(ov.__version__).split("-")[0]


class OpenVinoRunner:
    backend = "openvino"

    def __init__(self, path: str | Path, hint: str = "f32", threads: int | None = None) -> None:
        if hint not in HINTS:
            raise UsageError(f"unknown OpenVINO precision hint {hint!r}; choose from {', '.join(HINTS)}")
        ov = require("openvino", "the OpenVINO runner")
        core = ov.Core()
        if hint == "bf16" and "BF16" not in _capabilities_of(core):
            raise UsageError("bf16 needs a CPU with AVX512-BF16 or AMX, which OpenVINO does not find here; "
                             "use --precision int8-cpu or fp32")
        self.threads = threads or default_threads()
        # no pinning: OpenVINO's latency hint pins its threads to cores on Linux, and two processes (one
        # node per camera) then share the same cores at twice the time each; ONNX Runtime does not pin
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads,
                                  "INFERENCE_PRECISION_HINT": hint, "ENABLE_CPU_PINNING": False}
        try:
            self._compiled: Any = core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError with multi-line text
            raise UsageError(f"OpenVINO cannot load {path}: {str(exc).strip().splitlines()[0][:200]}") from exc
        self.hint = hint
        self._output = self._compiled.output(0)
        self.input_shape: tuple[Any, ...] = tuple(
            d.get_length() if d.is_static else None for d in self._compiled.input(0).get_partial_shape())
        self._local = threading.local()  # a thread's request goes with the thread (or with close)
        self.requests_made = 0
        self._lock = threading.Lock()
        self.description = f"OpenVINO {version()} CPU ({self.threads} threads, precision hint {hint})"

    def _request(self) -> Any:
        req = getattr(self._local, "request", None)
        if req is None:
            with self._lock:
                if self._compiled is None:
                    raise UsageError("this OpenVINO runner is closed")
                req = self._compiled.create_infer_request()
                self.requests_made += 1
            self._local.request = req
        return req

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        req = self._request()
        # infer() returns copies of the outputs (the request's own buffers are reused by its next call)
        out: np.ndarray = req.infer({0: np.ascontiguousarray(inputs)})[self._output]
        return out

    def close(self) -> None:
        with self._lock:
            self._compiled = None
        self._local = threading.local()

    def __enter__(self) -> OpenVinoRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
