"""Building a zoo model with its weights: published ImageNet weights, a user's checkpoint,
or explicit random weights. Checkpoints are data: nothing is unpickled that needs code.

Published weights that are not cached are fetched only after a probe of the first hop (the host,
or the proxy) answers within seconds (edgekit.zoo.weights_fetch); reading a checkpoint file is
edgekit.zoo.checkpoint's job."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgekit.deps import require
from edgekit.errors import UsageError, WeightsError
from edgekit.hashing import sha256_file
from edgekit.zoo.checkpoint import read_checkpoint
from edgekit.zoo.registry import ModelSpec, WeightSource
from edgekit.zoo.weights_fetch import _Fetch, _stall_limit, _timm_weights

# The classifier layer of each architecture, as named in our definitions.
CLASSIFIER = {
    "googlenet": "fc",
    "bn_inception": "last_linear",
    "inception_v3": "fc",
    "inception_v4": "last_linear",
    "inception_resnet_v1": "classif",
    "inception_resnet_v2": "classif",
}
# Heads that exist only in training graphs; dropped on load.
_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")
# Wrappers added by training frameworks.
_WRAP_PREFIXES = ("module.", "_orig_mod.", "model.")


@dataclass(frozen=True)
class LoadedWeights:
    kind: str  # "imagenet" (or another published source), "file", "random"
    description: str
    num_classes: int
    source: WeightSource | None  # published source whose preprocessing applies
    sha256: str | None = None


def build(spec: ModelSpec, weights: str, input_size: int | None = None,
          num_classes: int | None = None) -> tuple[Any, LoadedWeights]:
    """The model in eval mode and what its weights are."""
    size = input_size or spec.input_size
    if weights == "random":
        n = num_classes or 1000
        torch = require("torch", "building models")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # reproducible: `edgekit bench --compare torch` rebuilds the same weights
            model = spec.builder(n, size)
        _settle_batchnorm(model, size)
        return model.eval(), LoadedWeights("random", "random (untrained) weights", n, None)
    src = spec.weight_source(weights)
    if src is not None:
        return _published(spec, src, size), LoadedWeights(src.name, f"{src.provider}:{src.ident}",
                                                           src.num_classes, src)
    path = Path(weights)
    if path.suffix.lower() in (".pth", ".pt", ".bin", ".safetensors", ".ckpt") or path.exists():
        return _from_file(spec, path, size)
    names = [w.name for w in spec.weights] + ["random", "PATH"]
    raise UsageError(
        f"unknown weights {weights!r} for {spec.name}; choose from {', '.join(names)} "
        "(PATH: a .pth/.pt/.safetensors checkpoint)"
    )


def _settle_batchnorm(model: Any, size: int, batches: int = 3) -> None:
    """Give random weights batch-norm statistics from random images.

    Freshly initialised batch norm (mean 0, var 1) lets activations vanish or explode, so
    every input yields the same logits and a parity check proves little. Estimating the
    statistics once makes the outputs depend on the input, as with trained weights.
    """
    torch = require("torch", "building models")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    gen = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(4, 3, size, size, generator=gen))
    model.eval()


# ---------------------------------------------------------------- published weights

def _published(spec: ModelSpec, src: WeightSource, size: int) -> Any:
    torch = require("torch", "loading ImageNet weights")
    if src.provider == "timm":
        return _timm_weights(spec, src)
    tv = enum = None
    if src.provider == "torchvision":
        tv = require("torchvision", "loading torchvision weights")
        enum = tv.models.get_weight(src.ident)
        url = enum.url
    else:  # a plain URL of a state_dict (bn_inception's Caffe port)
        url = src.ident
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlsplit(url).path)
    fetch = _Fetch(spec.name, url, f"or copy it to {cached}")
    was_cached = cached.is_file()
    if not was_cached:
        fetch.check_reachable()
    try:
        with _stall_limit():
            if tv is not None:
                model = tv.models.googlenet(weights=enum)
            else:
                sd = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True)
    except Exception as exc:  # urllib, torch.hub (hash mismatch) and torch.load raise many kinds
        raise (fetch.damaged(cached, exc) if was_cached else fetch.failed(exc)) from exc
    if tv is None:
        model, _ = _load_state_dict(spec, sd, size, f"{spec.name} ImageNet weights")
        return model.eval()
    # Aux heads are training-only; the weights' normalisation moves into the graph.
    model.aux_logits = False
    model.aux1 = None
    model.aux2 = None
    model.transform_input = False
    return model.eval()


# ---------------------------------------------------------------- checkpoints

def _from_file(spec: ModelSpec, path: Path, size: int) -> tuple[Any, LoadedWeights]:
    if path.is_dir():
        raise UsageError(f"weights {path} is a folder; pass the checkpoint file in it (.pth, .pt, .safetensors)")
    if not path.is_file():
        raise UsageError(f"weights file {path} does not exist")
    sd = read_checkpoint(path)
    model, n = _load_state_dict(spec, sd, size, str(path))
    src = spec.weight_source("imagenet")
    return model.eval(), LoadedWeights("file", str(path), n, src, sha256_file(path))


def _normalise_keys(spec: ModelSpec, sd: dict[str, Any]) -> dict[str, Any]:
    keys = list(sd)
    strip = ""
    changed = True
    while changed:  # a wrapper prefix is stripped only when every key carries it
        changed = False
        for p in _WRAP_PREFIXES:
            if keys and all(k.startswith(strip + p) for k in keys):
                strip += p
                changed = True
    out: dict[str, Any] = {}
    for k, v in sd.items():
        k = k[len(strip):]
        if k.startswith(_AUX_PREFIXES) or k.endswith("num_batches_tracked"):
            continue
        out[k] = v
    if spec.name == "inception_resnet_v2":  # pretrainedmodels' name for timm's classif
        out = {("classif." + k[len("last_linear."):] if k.startswith("last_linear.") else k): v
               for k, v in out.items()}
    if spec.name == "bn_inception" and "conv1_7x7_s2.weight" in out:
        from edgekit.zoo.definitions.bn_inception import BNInception, caffe_key_map

        inverse = {c: ours for ours, c in caffe_key_map(BNInception(1)).items()}
        out = {inverse.get(k, k): v for k, v in out.items()}
    return out


def _load_state_dict(spec: ModelSpec, raw: dict[str, Any], size: int, what: str) -> tuple[Any, int]:
    sd = _normalise_keys(spec, raw)
    head = CLASSIFIER[spec.name] + ".weight"
    if head not in sd:
        model = spec.builder(1000, size)
        expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
        n_missing = len(expected - set(sd))
        raise WeightsError(
            f"{what} is not a {spec.name} checkpoint: {n_missing} of {len(expected)} expected keys "
            f"are missing (among them the classifier '{head}') and {len(set(sd) - expected)} keys "
            "are unexpected; check --model, or the file"
        )
    shape = tuple(getattr(sd[head], "shape", ()))
    if len(shape) != 2:
        raise WeightsError(
            f"{what}: the classifier weight '{head}' has shape {shape}, not (classes, features); "
            "is it a checkpoint for another architecture? check --model"
        )
    num_classes = int(shape[0])
    if num_classes < 1:
        raise WeightsError(
            f"{what}: the classifier '{head}' has {num_classes} outputs, so the model has no classes to "
            f"predict; save the checkpoint after replacing the head with one of your class count, e.g. "
            f"model.{CLASSIFIER[spec.name]} = torch.nn.Linear({shape[1]}, N)"
        )
    model = spec.builder(num_classes, size)
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    ref = model.state_dict()
    shape_bad = [k for k in expected & set(sd) if tuple(ref[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or shape_bad:
        example = (missing or unexpected or shape_bad)[0]
        raise WeightsError(
            f"{what} does not fit {spec.name}: {len(missing)} of {len(expected)} keys missing, "
            f"{len(unexpected)} unexpected, {len(shape_bad)} with another shape (e.g. '{example}'); "
            "is it a checkpoint for another architecture? check --model"
        )
    model.load_state_dict(sd)
    return model, num_classes
