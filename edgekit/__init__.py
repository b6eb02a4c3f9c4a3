"""edgekit: Inception classifiers from PyTorch to TensorRT on Jetson and desktop GPUs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgekit.version import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edgekit.runtime.classifier import Classifier, Prediction  # noqa: F401 (for type checkers; see _LAZY)
    from edgekit.runtime.sources import Reconnect  # noqa: F401
    from edgekit.runtime.streaming import Result, StreamOptions  # noqa: F401


def load(bundle: str | None = None, backend: str = "auto", **kwargs: Any) -> Classifier:
    """Load a bundle for classification (the most recent build when none is named)."""
    from edgekit.runtime.loader import load as _load

    return _load(bundle, backend=backend, **kwargs)


def stream(source: str | int | Sequence[str | int], clf: Classifier, **options: Any) -> Any:
    """Iterate over classification results of a camera, stream, file or folder, or of several
    at once (a list: one batched model call per round, each result naming its ``source``).

    ``for r in edgekit.stream("csi://0", clf): print(r.prediction.label)``;
    ``for r in edgekit.stream(["csi://0", "/dev/video1"], clf): print(r.source, r.frame_index)``.
    Leaving the loop (or ``.stop()``) stops capture cleanly. Options: see
    edgekit.runtime.streaming.StreamOptions.
    """
    from edgekit.runtime.streaming import Stream, StreamOptions

    if isinstance(source, (str, int)):
        return Stream(source, clf, StreamOptions(**options))
    from edgekit.runtime.multistream import MultiStream

    return MultiStream(list(source), clf, StreamOptions(**options))


_LAZY = {  # the types a caller names, imported when first asked for, so `import edgekit` stays light
    "Classifier": "edgekit.runtime.classifier",
    "Prediction": "edgekit.runtime.classifier",
    "StreamOptions": "edgekit.runtime.streaming",
    "Result": "edgekit.runtime.streaming",
    "Reconnect": "edgekit.runtime.sources",  # edgekit.stream(..., reconnect=edgekit.Reconnect(attempts=10))
}


def _moved(old: str, new: str) -> None:
    """Warn that old-path module ``old`` (before the stage folders) now lives at ``new``."""
    import warnings

    warnings.warn(f"{old} moved to {new}; edgekit.load, stream, Classifier, Prediction, StreamOptions, Result and "
                  f"Reconnect are on the package itself. The old path goes in a later release",
                  DeprecationWarning, stacklevel=3)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["Classifier", "Prediction", "Reconnect", "Result", "StreamOptions", "__version__", "load", "stream"]
