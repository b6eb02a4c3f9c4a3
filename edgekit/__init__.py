"""edgekit: Inception classifiers from PyTorch to TensorRT on Jetson and desktop GPUs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgekit.version import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edgekit.classifier import Classifier


def load(bundle: str | None = None, backend: str = "auto", **kwargs: Any) -> Classifier:
    """Load a bundle for classification (the most recent build when none is named)."""
    from edgekit.classifier import load as _load

    return _load(bundle, backend=backend, **kwargs)


def stream(source: str | int | Sequence[str | int], clf: Classifier, **options: Any) -> Any:
    """Iterate over classification results of a camera, stream, file or folder, or of several
    at once (a list: one batched model call per round, each result naming its ``source``).

    ``for r in edgekit.stream("csi://0", clf): print(r.prediction.label)``;
    ``for r in edgekit.stream(["csi://0", "/dev/video1"], clf): print(r.source, r.frame_index)``.
    Leaving the loop (or ``.stop()``) stops capture cleanly. Options: see
    edgekit.streaming.StreamOptions.
    """
    from edgekit.streaming import Stream, StreamOptions

    if isinstance(source, (str, int)):
        return Stream(source, clf, StreamOptions(**options))
    from edgekit.multistream import MultiStream

    return MultiStream(list(source), clf, StreamOptions(**options))


__all__ = ["__version__", "load", "stream"]
