"""Parsing ONNX with TensorRT's own parser: proof that a device will accept the model.

Needs no GPU: the parser and network definition run on the CPU (TensorRT-RTX's builder
does too). Never constructs a Runtime.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from edgekit.errors import MissingDependencyError


@dataclass(frozen=True)
class ParseIssue:
    node: str
    op: str
    message: str

    def __str__(self) -> str:
        return f"node {self.node or '?'} ({self.op or '?'}): {self.message}"


@dataclass(frozen=True)
class ParseReport:
    flavour: str  # "tensorrt" or "tensorrt_rtx"
    version: str
    layers: int
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    issues: tuple[ParseIssue, ...]

    @property
    def ok(self) -> bool:
        return not self.issues


def load_trt(prefer: str | None = None) -> ModuleType:
    """TensorRT's Python module: ``tensorrt`` first, then ``tensorrt_rtx``."""
    names = [prefer] if prefer else ["tensorrt", "tensorrt_rtx"]
    errors = []
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise MissingDependencyError(
        "TensorRT is not installed (" + "; ".join(errors) + "); on a Jetson it comes with JetPack, "
        'on a desktop: pip install "edgekit[rtx]" (TensorRT-RTX) or NVIDIA\'s tensorrt wheels'
    )


def network_flags(trt: ModuleType) -> int:
    """Explicit batch on TensorRT < 10 (where it is a flag); strongly typed where it exists."""
    flags = 0
    ncf = trt.NetworkDefinitionCreationFlag
    if hasattr(ncf, "EXPLICIT_BATCH") and int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(ncf.EXPLICIT_BATCH)
    return flags


def parse(path: str | Path, prefer: str | None = None) -> ParseReport:
    trt = load_trt(prefer)
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(path))
    issues = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = err.node_name() if hasattr(err, "node_name") else str(err.node())
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        issues.append(ParseIssue(node, op, err.desc()))
    if not ok and not issues:
        issues.append(ParseIssue("", "", "the parser refused the model without saying why"))
    inputs = tuple(
        (network.get_input(i).name, str(network.get_input(i).dtype), tuple(network.get_input(i).shape))
        for i in range(network.num_inputs)
    )
    return ParseReport(trt.__name__, trt.__version__, network.num_layers, inputs, tuple(issues))
