"""The Inception model zoo."""

from __future__ import annotations

from edgekit.zoo import models  # noqa: F401  (the six register on import; importing the registry runs this first)
from edgekit.zoo.registry import ModelSpec, WeightSource, get_spec, list_models, register

__all__ = ["ModelSpec", "WeightSource", "get_spec", "list_models", "register"]
