"""The model's input as a runner loaded it, and its agreement with the bundle's preprocessing: the check
every path (load, calibration, the CPU-path measurement) makes before its first frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit import manifest as mf
from edgekit.errors import BundleError
from edgekit.preprocess import size_mismatch


def check_input_size(path: Path, man: mf.Manifest, model_shape: tuple[Any, ...] | None = None,
                     then: str = "") -> None:
    """The manifest's preprocessing size, its input shape and the model's own input (when the
    runner tells it) must agree, or every frame would fail inside the runner. ``then``: the step
    to take after re-exporting (", then calibrate it")."""
    pre = man.preprocess
    for what, shape in (("its input shape in manifest.json", man.input.shape), ("the model file", model_shape)):
        got = size_mismatch(pre, man.input.layout, shape)
        if got is not None:
            raise BundleError(
                f"{path}: manifest.json's preprocessing makes {pre.height}x{pre.width} images but {what} takes "
                f"{got[0]}x{got[1]}; the manifest was edited or mixes two exports: re-export the bundle "
                f"(edgekit export ... --input-size N){then}")


def runner_input_shape(runner: Any) -> tuple[Any, ...] | None:
    """The model's input shape as the runner loaded it (None when the runner does not say)."""
    inputs = getattr(runner, "inputs", None)  # TensorRT runner
    if inputs:
        return tuple(inputs[0].shape)
    shape = getattr(runner, "input_shape", None)  # OpenVINO runner
    if shape is not None:
        return tuple(shape)
    session = getattr(runner, "_session", None)  # ONNX Runtime runner
    if session is not None:
        return tuple(session.get_inputs()[0].shape)
    return None
