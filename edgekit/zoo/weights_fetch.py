"""Fetching published weights: the first hop (the host, or the proxy) is probed before a
download, which fails in seconds when it cannot start; when the weights cannot come, the one-line
error names both ways forward: --weights random, and --weights PATH with where a copy from
another machine goes."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgekit.deps import require
from edgekit.errors import UsageError, WeightsUnavailableError
from edgekit.redact import redact
from edgekit.zoo.checkpoint import _diagnose
from edgekit.zoo.registry import ModelSpec, WeightSource

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
