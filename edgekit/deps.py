"""Lazy imports of the optional tiers, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgekit.errors import MissingDependencyError

# module -> (extra, why it is needed)
_EXTRAS: dict[str, str] = {
    "onnxruntime": "cpu",
    "torch": "export",
    "torchvision": "export",
    "timm": "export",
    "onnxslim": "export",
    "safetensors": "export",
    "matplotlib": "export",
    "cv2": "video",
    "tensorrt_rtx": "rtx",
    "openvino": "openvino",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an error saying which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if module.split(".")[0] == "tensorrt":  # no pip extra brings it: JetPack or NVIDIA does
            raise MissingDependencyError(
                f"{purpose} needs TensorRT's Python module, which is not importable here ({exc}); on a Jetson "
                "JetPack installs it (sudo apt install python3-libnvinfer; a venv sees it only when made with "
                "--system-site-packages), on a desktop NVIDIA's wheels do (pip install tensorrt)") from exc
        extra = _EXTRAS.get(module.split(".")[0], "desktop")
        raise MissingDependencyError(
            f"{purpose} needs the Python module '{module}', which is not installed ({exc}); "
            f'install it with: pip install "edgekit[{extra}]"'
        ) from exc


def available(module: str) -> bool:
    """True when ``module`` can be imported (without importing it twice)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
