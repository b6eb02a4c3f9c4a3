"""ONNX Runtime runner (cpu tier): the backend everywhere TensorRT is absent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.deps import require
from edgekit.errors import UsageError
from edgekit.runners import default_threads

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def gpu_providers(gpu_here: bool) -> list[str]:
    """ONNX Runtime's GPU providers installed here (onnxruntime-gpu, JetPack's wheel), best first.

    Only when a GPU answers (``gpu_here``): onnxruntime-gpu lists CUDA even on a machine without one.
    """
    if not gpu_here:
        return []
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return [p for p in GPU_PROVIDERS if p in ort.get_available_providers()]


def trt_provider_options(ort_version: str | None = None) -> dict[str, str]:
    """ONNX Runtime's TensorRT provider builds its engines at session start (minutes on a Jetson);
    cached on disk, keyed by model and GPU, later starts load them in seconds.

    ``trt_timing_cache_path`` exists from ONNX Runtime 1.17 (microsoft/onnxruntime #17865); an
    older one refuses the whole provider ("Invalid TensorRT EP option") and the session falls
    back to the next provider, so there the timing cache goes to the engine cache path."""
    if ort_version is None:
        import onnxruntime as ort

        ort_version = str(ort.__version__)
    root = Path(os.environ.get("EDGEKIT_CACHE", Path.home() / ".cache" / "edgekit")) / "ort-tensorrt"
    root.mkdir(parents=True, exist_ok=True)
    opts = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(root), "trt_timing_cache_enable": "True"}
    if _release(ort_version) >= (1, 17):
        opts["trt_timing_cache_path"] = str(root)
    return opts


def _release(version: str) -> tuple[int, int]:
    """'1.16.3' -> (1, 16); '1.17.0.dev20231005' -> (1, 17); unreadable parts count as 0."""
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in version.split(".")[:2]]
    return parts[0], parts[1] if len(parts) > 1 else 0


class OrtRunner:
    backend = "onnxruntime"

    def __init__(self, path: str | Path | bytes, threads: int | None = None,
                 providers: list[str] | None = None, optimize: bool = True, fuse_qdq: bool = True) -> None:
        """``path``: an ONNX file or a serialized model; ``optimize=False`` runs every node as
        written (no fused kernels: what the INT8 simulation needs); ``fuse_qdq=False`` keeps the
        other optimisations but runs Q/DQ as float operations (no integer kernels)."""
        ort = require("onnxruntime", "running ONNX models")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                         else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if not fuse_qdq:
            opts.add_session_config_entry("session.disable_quant_qdq", "1")
        available = ort.get_available_providers()
        chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in available]
        if not chosen:
            raise UsageError(
                f"none of the ONNX Runtime providers {providers} is available here "
                f"(available: {', '.join(available)})"
            )
        with_options: list[Any] = [(p, trt_provider_options(ort.__version__)) if p == "TensorrtExecutionProvider" else p
                                   for p in chosen]
        try:
            source = path if isinstance(path, bytes) else str(path)
            self._session: Any = ort.InferenceSession(source, sess_options=opts, providers=with_options)
        except Exception as exc:  # onnxruntime raises its own exception types
            what = "the model" if isinstance(path, bytes) else str(path)
            raise UsageError(f"ONNX Runtime cannot load {what}: {str(exc).splitlines()[0][:200]}") from exc
        self.input_name: str = self._session.get_inputs()[0].name
        self.output_names: list[str] = [o.name for o in self._session.get_outputs()]
        self.description = f"ONNX Runtime {ort.__version__} ({', '.join(chosen)}, {opts.intra_op_num_threads} threads)"

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        out: list[np.ndarray] = self._session.run(self.output_names[:1], {self.input_name: inputs})
        return out[0]

    def close(self) -> None:
        self._session = None

    def __enter__(self) -> OrtRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
