"""The old path of edgekit.runtime.classifier and loader (before the stage folders): importing it warns,
and it goes in a later release."""

from __future__ import annotations

from edgekit import _moved
from edgekit.runtime.classifier import Classifier, Prediction, softmax  # noqa: F401
from edgekit.runtime.loader import BACKENDS, PRECISIONS, load, profile_threads  # noqa: F401

_moved(__name__, "edgekit.runtime.classifier and loader")
