"""The old path of edgekit.runtime.classifier and loader (before the stage folders): importing it warns,
and it goes in a later release."""

from __future__ import annotations

from edgekit import _moved
from edgekit.runners.shapes import (  # noqa: F401
    check_input_size,
)
from edgekit.runtime.classifier import (  # noqa: F401
    Classifier,
    Prediction,
    softmax,
)
from edgekit.runtime.loader import (  # noqa: F401
    BACKENDS,
    PRECISIONS,
    load,
    profile_threads,
)

_moved(__name__, "edgekit.runtime.classifier and loader")
