"""Model registry: frozen specs registered by decorator (timm style).

This module is base tier: listing models and their preprocessing needs no torch. The
builder functions import torch when called.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import UsageError
from edgekit.preprocess import Preprocess


@dataclass(frozen=True)
class WeightSource:
    """Published weights and the preprocessing they were trained with."""

    name: str  # what --weights takes, e.g. "imagenet"
    provider: str  # "torchvision", "timm" or "url"
    ident: str  # torchvision weights enum name, timm model tag, or URL
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color_order: str = "RGB"
    input_range: float = 1.0
    num_classes: int = 1000
    licence: str = ""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str  # "Inception v1" ...
    description: str
    definition: str  # where the architecture comes from
    input_size: int
    min_input_size: int
    crop_fraction: float
    interpolation: str
    params_m: float  # parameters (millions) at 1000 classes, measured from the definition
    builder: Callable[[int, int], Any]  # (num_classes, input_size) -> torch.nn.Module
    weights: tuple[WeightSource, ...] = ()
    # preprocessing for weights that are not the published ones (a user's fine-tune)
    default_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    default_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    default_color_order: str = "RGB"
    default_input_range: float = 1.0
    aliases: tuple[str, ...] = field(default=())
    size_multiple: int = 1
    size_note: str = ""
    # a checkpoint file does not record its normalisation: why the one assumed for it is, and
    # the --mean/--std of the likeliest other training (printed at export)
    checkpoint_note: str = ""
    checkpoint_alternative: str = ""

    def weight_source(self, name: str) -> WeightSource | None:
        for w in self.weights:
            if w.name == name:
                return w
        return None

    def preprocess(self, source: WeightSource | None = None, input_size: int | None = None) -> Preprocess:
        size = input_size or self.input_size
        if source is None:
            return Preprocess(
                size, size, self.crop_fraction, self.interpolation,
                self.default_mean, self.default_std, self.default_color_order,
                self.default_input_range,
            )
        return Preprocess(
            size, size, self.crop_fraction, self.interpolation,
            source.mean, source.std, source.color_order, source.input_range,
        )


_REGISTRY: dict[str, ModelSpec] = {}


def register(fn: Callable[[], ModelSpec]) -> Callable[[], ModelSpec]:
    """Decorator: the function returns the model's spec; it is registered under its name."""
    spec = fn()
    if spec.name in _REGISTRY:
        raise RuntimeError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return fn


def list_models() -> list[ModelSpec]:
    return list(_REGISTRY.values())


def get_spec(name: str) -> ModelSpec:
    key = name.strip().lower().replace("-", "_")
    if key in _REGISTRY:
        return _REGISTRY[key]
    for spec in _REGISTRY.values():
        if key in spec.aliases:
            return spec
    names = list(_REGISTRY)
    close = difflib.get_close_matches(key, names + [a for s in _REGISTRY.values() for a in s.aliases], n=3, cutoff=0.5)
    resolved = []
    for c in close:
        n = c if c in _REGISTRY else next(s.name for s in _REGISTRY.values() if c in s.aliases)
        if n not in resolved:
            resolved.append(n)
    hint = f"; did you mean {' or '.join(repr(c) for c in resolved)}?" if resolved else ""
    raise UsageError(f"unknown model {name!r}{hint} (edgekit models lists all: {', '.join(names)})")
