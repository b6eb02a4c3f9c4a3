"""The old path of edgekit.runtime.sinks and counters (before the stage folders): importing it warns,
and it goes in a later release."""

from __future__ import annotations

from edgekit import _moved
from edgekit.runtime.counters import (  # noqa: F401
    LatencyHistogram,
    PerSource,
    Stats,
)
from edgekit.runtime.sinks import (  # noqa: F401
    VIDEO_CODECS,
    Callback,
    JsonLines,
    TerminalStatus,
    VideoOutput,
    Window,
    annotate,
)
from edgekit.runtime.streaming import Played, Result  # noqa: F401

_moved(__name__, "edgekit.runtime.sinks and counters")
