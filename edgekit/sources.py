"""The old path of edgekit.runtime.sources and latest (before the stage folders): importing it warns,
and it goes in a later release."""

from __future__ import annotations

from edgekit import _moved
from edgekit.redact import redact  # noqa: F401
from edgekit.runtime.latest import (  # noqa: F401
    LatestFrame,
)
from edgekit.runtime.liblog import (  # noqa: F401
    DEBUG_ENV,
    LIBRARY_LOG,
    OPEN_WATCHDOG_S,
    POLL_S,
    LibraryLog,
    library_reason,
)
from edgekit.runtime.sources import (  # noqa: F401
    V4L2_NODE,
    Frame,
    Reader,
    Reconnect,
    SourceError,
    SourceInputError,
    SourceSpec,
    csi_pipeline,
    every_frame,
    has_gstreamer,
    parse,
)

__all__ = ["Frame", "SourceSpec", "SourceError", "SourceInputError", "Reader", "LatestFrame", "Reconnect", "parse",
           "redact", "every_frame"]  # as the flat module had it

_moved(__name__, "edgekit.runtime.sources and latest")
