"""Building TensorRT engines from typed ONNX (gpu tier).

Strongly typed networks: precision comes from the ONNX (FP16 weights, Q/DQ INT8). With
TensorRT-RTX the build runs ahead of time on the CPU; the engine is JIT-compiled on the GPU
at load. (Per-device profiles, caching and older TensorRT versions: see the engine issue.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.trt.parse import load_trt, network_flags


class BuildError(EdgekitError):
    """TensorRT refused the model or ran out of resources."""


@dataclass(frozen=True)
class Built:
    plan: bytes
    flavour: str
    version: str
    seconds: float


class _Logger:
    """Keeps TensorRT's last messages for error reports."""

    def __init__(self, trt: object) -> None:
        base = trt.ILogger  # type: ignore[attr-defined]

        class Recorder(base):  # type: ignore[misc,valid-type]
            def __init__(self) -> None:
                base.__init__(self)
                self.lines: list[str] = []

            def log(self, severity: object, msg: str) -> None:
                if severity <= trt.ILogger.Severity.WARNING:  # type: ignore[attr-defined]
                    self.lines.append(msg)

        self.logger = Recorder()


def build_engine(onnx_path: str | Path, batch: tuple[int, int, int] = (1, 1, 1), workspace_mib: int | None = None,
                 prefer: str | None = None) -> Built:
    trt = load_trt(prefer)
    rec = _Logger(trt).logger
    t0 = time.perf_counter()
    builder = trt.Builder(rec)
    flags = network_flags(trt)
    ncf = trt.NetworkDefinitionCreationFlag
    if hasattr(ncf, "STRONGLY_TYPED"):
        flags |= 1 << int(ncf.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, rec)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [parser.get_error(i) for i in range(parser.num_errors)]
        detail = "; ".join(f"node {e.node_name() if hasattr(e, 'node_name') else e.node()} "
                           f"({e.node_operator() if hasattr(e, 'node_operator') else '?'}): {e.desc()}" for e in errs)
        raise BuildError(f"TensorRT's ONNX parser refused {onnx_path}: {detail or 'no details'}")
    config = builder.create_builder_config()
    if workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    inp = network.get_input(0)
    if inp.shape[0] == -1:
        lo, opt, hi = batch
        profile = builder.create_optimization_profile()
        rest = list(inp.shape)[1:]
        profile.set_shape(inp.name, [lo, *rest], [opt, *rest], [hi, *rest])
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        tail = " | ".join(rec.lines[-3:]) or "no message"
        raise BuildError(f"TensorRT could not build {onnx_path}: {tail}; if it ran out of memory, "
                         "lower the workspace or the maximum batch")
    return Built(bytes(plan), trt.__name__, trt.__version__, time.perf_counter() - t0)
