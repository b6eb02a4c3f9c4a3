"""The old path of edgekit.runtime.sources and latest (before the stage folders): importing it warns, and it goes in a
later release."""

from __future__ import annotations

from edgekit import _moved
from edgekit.runtime.latest import LatestFrame  # noqa: F401
from edgekit.runtime.sources import (  # noqa: F401
    Frame,
    Reader,
    Reconnect,
    SourceError,
    SourceInputError,
    SourceSpec,
    every_frame,
    parse,
)

_moved(__name__, "edgekit.runtime.sources and latest")
