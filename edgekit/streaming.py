"""The old path of edgekit.runtime.streaming (before the stage folders): importing it warns,
and it goes in a later release."""

from __future__ import annotations

from edgekit import _moved
from edgekit.runtime.classifier import Classifier, Prediction, softmax  # noqa: F401
from edgekit.runtime.sink_thread import (  # noqa: F401
    SinkError,
    SinkThread,
    sink_error,
)
from edgekit.runtime.streaming import (  # noqa: F401
    Played,
    Result,
    Stream,
    StreamOptions,
    camera_settings,
    played_status,
    top_k,
)

_moved(__name__, "edgekit.runtime.streaming")
