"""The Inception model zoo."""

from __future__ import annotations

from edgekit.zoo.registry import ModelSpec, WeightSource, get_spec, list_models, register

__all__ = ["ModelSpec", "WeightSource", "get_spec", "list_models", "register"]
