"""Building a zoo model with its weights: published ImageNet weights, a user's checkpoint,
or explicit random weights. Checkpoints are data: nothing is unpickled that needs code.

Published weights that are not cached are fetched only after a probe of the first hop (the host,
or the proxy) answers within seconds; when they cannot come, the one-line error names both ways
forward: --weights random, and --weights PATH with where a copy from another machine goes."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgekit.deps import require
from edgekit.errors import UsageError, WeightsError, WeightsUnavailableError
from edgekit.hashing import sha256_file
from edgekit.redact import redact
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

# Before a download, the host (or the proxy that would carry it) must accept a connection within
# this many seconds, the name lookup included. Offline, the command then fails at once, where
# the hub clients would retry name lookups and connections for half a minute.
PROBE_SECONDS = 3.0
# A download whose connection stays silent this long fails instead of hanging (torch.hub sets
# no timeout of its own).
STALL_SECONDS = 30.0
# Hugging Face: the metadata request made before a download, without the client's retries
# (five, with back-off: about 25 s when the hub cannot be reached).
HF_METADATA_SECONDS = 10.0
_TRUE = ("1", "ON", "YES", "TRUE")
_PROXY_PORTS = {"https": 443, "socks4": 1080, "socks5": 1080, "socks5h": 1080}


@dataclass(frozen=True)
class _Fetch:
    """Published weights on their way here: what to say when they cannot come."""

    model: str
    url: str  # what a user can download on another machine
    put_it: str  # how to place a copy where --weights imagenet finds it
    hub: bool = False  # fetched by huggingface_hub (its proxy variables and offline switch)

    def ways(self) -> str:
        return ("to try the pipeline, pass --weights random (untrained: the labels are meaningless); for the "
                f"ImageNet weights, download {self.url} on a machine with internet and pass the file with "
                f"--weights PATH, {self.put_it}")

    def check_reachable(self) -> None:
        """Fail at once, naming the ways forward, when the download cannot even start."""
        why = _unreachable(self.url, self.hub)
        if why is not None:
            raise WeightsUnavailableError(f"cannot download {self.model} ImageNet weights: {why}; {self.ways()}")

    def failed(self, exc: BaseException | None, why: str | None = None) -> WeightsUnavailableError:
        host = urlsplit(self.url).hostname or self.url
        return WeightsUnavailableError(
            f"cannot download {self.model} ImageNet weights from {host}: {why or _why(exc)}; {self.ways()}")

    def damaged(self, path: Path, exc: BaseException) -> WeightsUnavailableError:
        what = _diagnose(path) or _why(exc)
        return WeightsUnavailableError(
            f"the cached {self.model} ImageNet weights {path} cannot be loaded: {what}; delete the file so that "
            "--weights imagenet downloads it again, or pass --weights random to try the pipeline (labels "
            "meaningless)")


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


def _timm_weights(spec: ModelSpec, src: WeightSource) -> Any:
    timm = require("timm", "loading timm weights")
    hub = require("huggingface_hub", "loading timm weights")
    cfg = timm.models.get_pretrained_cfg(src.ident)
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:  # weights timm fetches from a URL of its own
        url = getattr(cfg, "url", None) or src.ident
        torch = require("torch", "loading timm weights")
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlsplit(url).path)
        fetch = _Fetch(spec.name, url, f"or copy it to {cached}")
        if not cached.is_file():
            fetch.check_reachable()
        try:
            return timm.create_model(src.ident, pretrained=True).eval()
        except Exception as exc:
            raise fetch.failed(exc) from exc
    repo, _, rev = hub_id.partition("@")
    revision = rev or None
    names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else ["model.safetensors",
                                                                                  "pytorch_model.bin"]
    cache = Path(hub.constants.HF_HUB_CACHE)
    fetch = _Fetch(spec.name, hub.hf_hub_url(repo, names[0], revision=revision),
                   f"or copy the folder {cache / ('models--' + repo.replace('/', '--'))} from a machine that "
                   "downloaded them", hub=True)
    file = None
    for name in names:  # cached: used as it is, with no network request at all
        hit = hub.try_to_load_from_cache(repo, name, cache_dir=str(cache), revision=revision)
        if isinstance(hit, str):
            file = hit
            break
    if file is None:
        fetch.check_reachable()
        file = _hf_download(hub, repo, names, revision, cache, fetch)
    try:
        model = timm.create_model(src.ident, pretrained=True, pretrained_cfg_overlay={"file": file})
    except Exception as exc:
        raise fetch.damaged(Path(file), exc) from exc
    return model.eval()


def _hf_download(hub: Any, repo: str, names: list[str], revision: str | None, cache: Path,
                 fetch: _Fetch) -> str:
    """The first of names that the repository holds, downloaded into cache. A metadata request
    without retries goes first: hf_hub_download retries a failed one five times (about 25 s)."""
    found = (getattr(getattr(hub, "errors", None), "EntryNotFoundError", None),
             getattr(hub.utils, "EntryNotFoundError", None))  # where older huggingface_hub keeps it
    not_found: tuple[type[BaseException], ...] = tuple(c for c in found if isinstance(c, type))
    for name in names:
        try:
            hub.get_hf_file_metadata(hub.hf_hub_url(repo, name, revision=revision), timeout=HF_METADATA_SECONDS)
        except not_found:
            continue
        except Exception as exc:  # httpx/requests errors and the hub's own
            raise fetch.failed(exc) from exc
        try:
            return hub.hf_hub_download(repo, name, revision=revision, cache_dir=str(cache),
                                       etag_timeout=HF_METADATA_SECONDS)
        except Exception as exc:
            raise fetch.failed(exc) from exc
    raise fetch.failed(None, f"{repo} holds none of {', '.join(names)}")


def _unreachable(url: str, hub: bool = False) -> str | None:
    """Why a download of url cannot start from here, in a few words; None when the first hop
    answers (no promise that the download will succeed)."""
    for var in ("EDGEKIT_OFFLINE",) + (("HF_HUB_OFFLINE",) if hub else ()):
        if os.environ.get(var, "").strip().upper() in _TRUE:
            return f"{var}={os.environ[var].strip()} is set (offline mode)"
    route = _route(url, hub)
    return None if route is None else _probe(*route)


def _route(url: str, all_proxy: bool = False) -> tuple[str, int, str] | None:
    """(host, port, name for messages) of a download's first hop: the proxy that would carry it
    (the *_proxy and no_proxy variables, as urllib and the hub client read them), else the host
    itself. The name never holds a proxy's user or password. None: nothing to probe."""
    parts = urlsplit(url)
    scheme = (parts.scheme or "https").lower()
    try:
        host, port = parts.hostname, parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None
    if not host:
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme) or (proxies.get("all") if all_proxy else None)
    if proxy and not urllib.request.proxy_bypass(host):
        try:
            p = urlsplit(proxy if "://" in proxy else "http://" + proxy)
            phost, pport = p.hostname, p.port or _PROXY_PORTS.get(p.scheme.lower(), 80)
        except ValueError as exc:  # the value is not shown: it may hold a password
            why = str(exc).split(":")[0]
            raise UsageError(f"the {scheme} proxy setting ({scheme.upper()}_PROXY or {scheme}_proxy) is not a URL "
                             f"({why}); fix it (http://HOST:PORT) or unset it") from None
        return (phost, pport, f"the {scheme} proxy {phost}:{pport}") if phost else None
    return host, port, host


def _probe(host: str, port: int, name: str | None = None, seconds: float | None = None) -> str | None:
    """None when host:port accepts a TCP connection within seconds (name lookup included), else
    why not, in a few words."""
    name = name or host
    seconds = PROBE_SECONDS if seconds is None else seconds
    deadline = time.monotonic() + seconds
    found: list[Any] = []

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except Exception as exc:  # gaierror; UnicodeError for a malformed name
            found.append(exc)

    # getaddrinfo takes no timeout (a dead DNS server costs 5 s per try): a thread that is left
    # behind when it is slow
    t = threading.Thread(target=lookup, name="edgekit-probe-dns", daemon=True)
    t.start()
    t.join(seconds)
    if not found:
        return f"{name} did not resolve within {seconds:g} s (no DNS answer: offline?)"
    if isinstance(found[0], BaseException):
        return f"{name} does not resolve (no DNS: offline?)"
    err: OSError | None = None
    addrs = found[0]
    for i, (family, kind, proto, _, addr) in enumerate(addrs):
        left = max(deadline - time.monotonic(), 1.0 if i == 0 else 0.0)  # a slow lookup leaves 1 s
        if left <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as s:
                s.settimeout(max(left / (len(addrs) - i), min(left, 1.0)))
                s.connect(addr)
            return None
        except OSError as exc:
            err = exc
    if isinstance(err, ConnectionRefusedError):
        return f"{name} refused the connection"
    if err is None or isinstance(err, (socket.timeout, TimeoutError)):
        return f"{name} did not answer within {seconds:g} s (offline, or a firewall?)"
    return f"{name} cannot be reached ({err.strerror or type(err).__name__})"


@contextmanager
def _stall_limit() -> Iterator[None]:
    """Sockets opened meanwhile (torch.hub's urllib sets no timeout) give up after STALL_SECONDS
    of silence; a slow download that keeps receiving is not cut."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(STALL_SECONDS if old is None else old)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _why(exc: BaseException | None) -> str:
    """A download failure in a few words: the network cause where one is known, else the first
    line of the message (credentials masked)."""
    if exc is None:
        return "unknown error"
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, socket.gaierror):
            return "the name does not resolve (no DNS: offline?)"
        if isinstance(e, ConnectionRefusedError):
            return "the connection was refused"
        if isinstance(e, (socket.timeout, TimeoutError)):
            return "no answer in time (offline, or a firewall?)"
        if isinstance(e, ssl.SSLError):
            return "the secure connection failed (a proxy or firewall that intercepts HTTPS?)"
        reason = getattr(e, "reason", None)
        if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
            # "<urlopen error Tunnel connection failed: 407 ...>": the reason without the wrapping
            exc = reason if isinstance(reason, BaseException) else OSError(str(reason))
        e = reason if isinstance(reason, BaseException) else (e.__cause__ or e.__context__)
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    if "Proxy" in type(exc).__name__:
        text = f"the proxy answered {text}"
    return redact(text)[:160]


# ---------------------------------------------------------------- checkpoints

_SAVE = "save the weights with torch.save(model.state_dict(), PATH) (or as .safetensors)"
_AGAIN = f"copy or download the file again, or {_SAVE}"


def _from_file(spec: ModelSpec, path: Path, size: int) -> tuple[Any, LoadedWeights]:
    if path.is_dir():
        raise UsageError(f"weights {path} is a folder; pass the checkpoint file in it (.pth, .pt, .safetensors)")
    if not path.is_file():
        raise UsageError(f"weights file {path} does not exist")
    sd = read_checkpoint(path)
    model, n = _load_state_dict(spec, sd, size, str(path))
    src = spec.weight_source("imagenet")
    return model.eval(), LoadedWeights("file", str(path), n, src, sha256_file(path))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A flat name -> tensor dict from a safetensors or torch file (told apart by their content),
    without running code. Whatever the file is instead is said in one line, in user terms."""
    torch = require("torch", "reading checkpoints")
    kind = _identify(path)
    if kind == "safetensors":
        st = require("safetensors.torch", "reading .safetensors checkpoints")
        try:
            return _unwrap(dict(st.load_file(str(path), device="cpu")), path)
        except Exception as exc:  # safetensors raises its own SafetensorError
            what = _diagnose(path) or "its header does not match its data"
            raise WeightsError(f"cannot read {path}: it is a damaged safetensors file: {what}; {_AGAIN}") from exc
    try:
        with open(path, "rb") as f:  # a file object: torch.load reads a .safetensors name as safetensors
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = str(exc)
        if "Unsupported global" in msg or "GLOBAL " in msg:
            m = re.search(r"GLOBAL ([\w.]+)", msg)
            name = f" ({m.group(1)})" if m else ""
            raise WeightsError(
                f"refusing to load {path}: it holds a pickled Python object{name} that would run code "
                "when loaded; re-save only the weights, e.g. torch.save(model.state_dict(), 'weights.pth'), "
                "or use .safetensors"
            ) from exc
        what = _diagnose(path) or "its data cannot be decoded"
        raise WeightsError(f"cannot read {path}: it is a damaged PyTorch checkpoint: {what}; {_AGAIN}") from exc
    return _unwrap(obj, path)


def _head(path: Path, n: int = 4096) -> tuple[bytes, int]:
    try:
        with open(path, "rb") as f:
            return f.read(n), os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc.strerror or exc}; check that the file is readable") from exc


def _identify(path: Path) -> str:
    """"torch" or "safetensors" by the file's content; anything else is a WeightsError saying
    what the file is instead."""
    head, size = _head(path)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        problem = _zip_problem(path)
        if problem:
            raise WeightsError(f"cannot read {path}: it is {problem[0]}, not a PyTorch checkpoint; {problem[1]}")
        return "torch"
    if _safetensors_like(head):
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # a pickle: PyTorch's format before 1.6
    what, todo = _not_weights(head, size)
    raise WeightsError(f"cannot read {path}: {what}; {todo}")


def _safetensors_like(head: bytes) -> bool:
    """An 8-byte little-endian header length, then the JSON header: '{"' (or '{}' if no tensors)."""
    return len(head) >= 10 and head[8:9] == b"{" and head[9:10] in (b'"', b"}", b" ", b"\n")


def _not_weights(head: bytes, size: int) -> tuple[str, str]:
    """What a file that is neither a PyTorch nor a safetensors file is, and what to do."""
    nor = "not a PyTorch checkpoint or safetensors file"
    if size == 0:
        return f"it is empty (0 bytes), {nor}", _AGAIN
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml")) or b"<html" in text[:512]:
        return (f"it is an HTML page, {nor} (a failed download, e.g. an error or login page saved under "
                "this name?)", f"download the file again (from a browser, the page's own link), or {_SAVE}")
    if text.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights it stands for", "fetch them with git lfs pull"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return (f"it is an HDF5 file (Keras weights?), {nor}",
                "for a Keras model, export it to ONNX and use edgekit import")
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed", "decompress it (gunzip) and pass the result"
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            is_text = True
        except UnicodeDecodeError as exc:
            is_text = exc.start >= len(head) - 3  # a character cut at the end of what was read
        if is_text:
            return f"it is a text file, {nor}", _AGAIN
    return f"its content is {nor} (an unknown format)", _AGAIN


def _zip_problem(path: Path) -> tuple[str, str] | None:
    """None for a zip archive laid out as PyTorch writes them, else (what it is, what to do)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return ("a truncated or damaged zip archive (its end is missing or corrupt: an interrupted download "
                "or copy?)", _AGAIN)
    if any(n.endswith("data.pkl") for n in names):
        return None
    if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
        return "a Keras .keras archive", "for a Keras model, export it to ONNX and use edgekit import"
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"a zip archive without data.pkl ({f'it holds {shown}' if names else 'empty'})", _SAVE


def _diagnose(path: Path) -> str | None:
    """Why a file that looks like a checkpoint does not load, where its layout tells; None if not."""
    try:
        head, size = _head(path)
    except WeightsError:
        return None
    if head.startswith(b"PK"):
        problem = _zip_problem(path)
        return f"it is {problem[0]}" if problem else None
    if not _safetensors_like(head):
        return None if head[:1] == b"\x80" else _not_weights(head, size)[0]  # a pickle tells nothing more
    n = int.from_bytes(head[:8], "little")
    if 8 + n > size:
        return f"its header claims {n} bytes but the file has {size} (truncated?)"
    try:
        with open(path, "rb") as f:
            f.seek(8)
            header = json.loads(f.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "its header is not valid (damaged)"
    need, have = max(ends, default=0), size - 8 - n
    if need > have:
        return f"its header lists {need} bytes of tensors but only {have} follow (truncated?)"
    if need < have:
        return f"its header lists {need} bytes of tensors but {have} follow (damaged?)"
    return "a tensor's offsets or shape in its header do not match its data"


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        if not obj:
            return "an empty dict"
        keys = ", ".join(repr(k)[:40] for k in list(obj)[:4]) + (", ..." if len(obj) > 4 else "")
        return f"a dict with keys {keys}"
    return f"a {type(obj).__name__}"


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
        f"{path} holds no state_dict: it holds {_describe(obj)}, where a dict of tensors (or one under "
        "'state_dict' or 'model') was expected; save it with torch.save(model.state_dict(), PATH)"
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
