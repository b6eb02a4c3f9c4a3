"""Building a zoo model with its weights: published ImageNet weights, a user's checkpoint,
or explicit random weights. Checkpoints are data: nothing is unpickled that needs code."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.deps import require
from edgekit.errors import UsageError, WeightsError
from edgekit.hashing import sha256_file
from edgekit.zoo.registry import ModelSpec, WeightSource

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


def _reachable(host: str, timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("EDGEKIT_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _published(spec: ModelSpec, src: WeightSource, size: int) -> Any:
    torch = require("torch", "loading ImageNet weights")
    if src.provider == "timm":
        return _timm_weights(spec, src)
    if src.provider == "torchvision":
        tv = require("torchvision", "loading torchvision weights")
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        try:
            model = tv.models.googlenet(weights=src.ident.split(".")[-1])
        except (OSError, RuntimeError) as exc:
            raise _offline(spec, src, cache, exc) from exc
        # Aux heads are training-only; the weights' normalisation moves into the graph.
        model.aux_logits = False
        model.aux1 = None
        model.aux2 = None
        model.transform_input = False
        return model.eval()
    # a plain URL of a state_dict (bn_inception's Caffe port)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        sd = torch.hub.load_state_dict_from_url(src.ident, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise _offline(spec, src, cache, exc) from exc
    model, _ = _load_state_dict(spec, sd, size, f"{spec.name} ImageNet weights")
    return model.eval()


def _timm_weights(spec: ModelSpec, src: WeightSource) -> Any:
    timm = require("timm", "loading timm weights")
    hub = require("huggingface_hub", "loading timm weights")
    cfg = timm.models.get_pretrained_cfg(src.ident)
    repo = cfg.hf_hub_id if cfg is not None else None
    cache = Path(hub.constants.HF_HUB_CACHE)
    overlay: dict[str, str] = {}
    if repo and not _reachable("huggingface.co"):
        # Offline: use the cached file directly instead of letting the hub client retry.
        for fname in ("model.safetensors", "pytorch_model.bin"):
            hit = hub.try_to_load_from_cache(repo, fname)
            if isinstance(hit, str):
                overlay = {"file": hit}
                break
        else:
            raise _offline(spec, src, cache, OSError("huggingface.co is not reachable"))
    try:
        model = timm.create_model(src.ident, pretrained=True, pretrained_cfg_overlay=overlay or None)
    except (OSError, RuntimeError, ValueError) as exc:
        raise _offline(spec, src, cache, exc) from exc
    return model.eval()


def _offline(spec: ModelSpec, src: WeightSource, cache: Path, exc: BaseException) -> WeightsError:
    return WeightsError(
        f"cannot download {spec.name} ImageNet weights ({src.provider}:{src.ident}): "
        f"{str(exc).splitlines()[0][:160]}; they are cached in {cache} once downloaded "
        "on a machine with internet, or pass a local checkpoint with --weights PATH"
    )


# ---------------------------------------------------------------- checkpoints


def _from_file(spec: ModelSpec, path: Path, size: int) -> tuple[Any, LoadedWeights]:
    if not path.is_file():
        raise UsageError(f"weights file {path} does not exist")
    sd = read_checkpoint(path)
    model, n = _load_state_dict(spec, sd, size, str(path))
    src = spec.weight_source("imagenet")
    return model.eval(), LoadedWeights("file", str(path), n, src, sha256_file(path))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A flat name -> tensor dict from .safetensors or a torch file, without running code."""
    torch = require("torch", "reading checkpoints")
    if path.suffix.lower() == ".safetensors":
        st = require("safetensors.torch", "reading .safetensors checkpoints")
        try:
            return dict(st.load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise WeightsError(f"cannot read {path}: not a valid safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = str(exc)
        if "Unsupported global" in msg or "GLOBAL " in msg:
            first = next((ln.strip() for ln in msg.splitlines() if "Unsupported global" in ln), msg.splitlines()[0])
            raise WeightsError(
                f"refusing to load {path}: it contains pickled Python objects that would run code "
                f"when loaded ({first[:160]}); re-save only the weights, e.g. "
                "torch.save(model.state_dict(), 'weights.pth'), or use .safetensors"
            ) from exc
        raise WeightsError(f"cannot read {path}: not a PyTorch checkpoint ({msg.splitlines()[0][:160]})") from exc
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> dict[str, Any]:
    torch = require("torch", "reading checkpoints")
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        if isinstance(obj, dict):
            for key in ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema"):
                if key in obj and isinstance(obj[key], dict):
                    obj = obj[key]
                    break
            else:
                break
        else:
            break
    raise WeightsError(
        f"{path} holds no state_dict: expected a dict of tensors, or one under 'state_dict' or "
        "'model'; save it with torch.save(model.state_dict(), PATH)"
    )


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
        from edgekit.zoo.bn_inception import BNInception, caffe_key_map

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
