"""edgekit: Inception classifiers from PyTorch to TensorRT on Jetson and desktop GPUs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from edgekit.classifier import Classifier


def load(bundle: str | None = None, backend: str = "auto", **kwargs: Any) -> Classifier:
    """Load a bundle for classification (the most recent build when none is named)."""
    from edgekit.classifier import load as _load

    return _load(bundle, backend=backend, **kwargs)


__all__ = ["__version__", "load"]
