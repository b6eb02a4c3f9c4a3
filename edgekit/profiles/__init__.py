"""Per-device profiles: what a device runs fast and how to build for it (base tier).

Profiles are YAML files (edgekit/profiles/*.yaml, shipped in the wheel) validated into frozen
dataclasses when loaded; errors name the file and the key. A user profile may ``extends:``
a shipped one. Detection (the device tree and /etc/nv_tegra_release on a Jetson, the GPU's
name and compute capability elsewhere) and the build refusals live in edgekit.profiles.device;
this package re-exports them, so ``edgekit.profiles.detect`` is the one callers use (and tests replace).
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgekit.errors import UsageError
from edgekit.keys import Keys
from edgekit.profiles.device import (  # noqa: F401 (the package is their address: prof_mod.detect() and the rest)
    DLA_BATCH,
    Device,
    check_request,
    detect,
    edgekit_runs_on,
    match,
    read_device,
    target_compute_capability,
)

SHIPPED = Path(__file__).parent
KINDS = ("jetson", "desktop", "datacenter", "cpu")
PRECISIONS = ("fp32", "fp16", "int8")


def user_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_PROFILES", Path.home() / ".config" / "edgekit" / "profiles"))


@dataclass(frozen=True)
class Batch:
    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class Software:
    jetpack: str
    l4t: str
    tensorrt: str

    @property
    def python(self) -> str:
        """JetPack's system Python, the only one TensorRT's bindings exist for: 4.x 3.6, 5.x 3.8,
        6.x 3.10, 7.x 3.12."""
        return {"4": "3.6", "5": "3.8", "6": "3.10", "7": "3.12"}.get(self.jetpack.split(".")[0], "")

    @property
    def runs_edgekit(self) -> bool:
        """edgekit's Python runtime needs Python 3.8 (JetPack 5) and TensorRT 8.5 (uint8 input)."""
        py = tuple(int(x) for x in self.python.split(".")) if self.python else (0,)
        trt = tuple(int(x) for x in self.tensorrt.split(".")[:2] if x.isdigit())
        return py >= (3, 8) and trt >= (8, 5)


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    fps: int
    sensor_mode: int | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    kind: str
    compute_capability: tuple[str, ...]
    architecture: str
    fast_precisions: tuple[str, ...]
    default_precision: str
    dla_cores: int
    workspace_mib: int
    batch: Batch
    max_batch: int
    opt_level: int
    camera: Camera
    power: str
    sources: tuple[str, ...]
    device_tree: tuple[str, ...] = ()
    compatible: tuple[str, ...] = ()
    gpu_names: tuple[str, ...] = ()
    memory_gb: tuple[float, ...] = ()
    software: tuple[Software, ...] = ()
    tensorrt_rtx: bool = False
    cpu_threads: int | None = None  # ONNX Runtime threads: the CPU's cores less one for capture
    path: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


KNOWN_KEYS = {"name", "description", "kind", "extends", "detect", "compute_capability", "architecture", "memory_gb",
              "precisions", "dla_cores", "build", "software", "camera", "power", "sources", "tensorrt_rtx",
              "cpu_threads"}


def _validate(data: dict[str, Any], source: str) -> Profile:
    r = Keys(source, data)
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise r.fail(unknown[0], f"is not a profile key (valid: {', '.join(sorted(KNOWN_KEYS))})")
    name = r.get("name", str)
    description = r.get("description", str)
    kind = r.get("kind", str, choices=KINDS)
    d = r.sub("detect", {})
    p = r.sub("precisions", {})
    fast = p.strings("fast", PRECISIONS)
    if not fast:
        raise p.fail("fast", "must list at least one of fp32, fp16, int8")
    default = p.get("default", str, choices=PRECISIONS)
    if default not in fast:
        raise p.fail("default", f"is {default!r}, which is not among the fast precisions {list(fast)}")
    b = r.sub("build", {})
    bb = b.sub("batch", {})
    batch = Batch(bb.get("min", int, 1), bb.get("opt", int, 1), bb.get("max", int, 1))
    if not 1 <= batch.min <= batch.opt <= batch.max:
        raise bb.fail("", f"needs 1 <= min <= opt <= max, got {batch.min}:{batch.opt}:{batch.max}")
    max_batch = b.get("max_batch", int, batch.max)
    if max_batch < batch.max:
        raise b.fail("max_batch", f"({max_batch}) is smaller than batch.max ({batch.max})")
    cam = r.sub("camera", {})
    for key in ("width", "height", "fps"):
        if cam.get(key, int, 1) < 1:
            raise cam.fail(key, f"must be at least 1, got {cam.get(key, int)}")
    software = []
    for i, s in enumerate(r.get("software", list, [])):
        k = r.item("software", i, s)
        software.append(Software(str(k.get("jetpack", (str, int, float))), str(k.get("l4t", (str, int, float))),
                                 str(k.get("tensorrt", (str, int, float)))))
    ccs = r.strings("compute_capability")
    for i, cc in enumerate(ccs):
        if not re.fullmatch(r"\d+\.\d+", cc):
            raise r.fail(f"compute_capability[{i}]", f"must look like '8.7', got {cc!r}")
    mem = _memory(r)
    dla = r.get("dla_cores", int, 0)
    if dla < 0 or dla > 2:
        raise r.fail("dla_cores", f"must be 0, 1 or 2, got {dla}")
    opt_level = b.get("opt_level", int, 3)
    if not 0 <= opt_level <= 5:
        raise b.fail("opt_level", f"must be 0-5 (TensorRT's builder optimisation level), got {opt_level}")
    return Profile(
        name=name, description=description, kind=kind,
        compute_capability=ccs, architecture=r.get("architecture", str, ""),
        fast_precisions=fast, default_precision=default, dla_cores=dla,
        workspace_mib=b.get("workspace_mib", int, 1024), batch=batch, max_batch=max_batch, opt_level=opt_level,
        camera=Camera(cam.get("width", int, 1280), cam.get("height", int, 720), cam.get("fps", int, 30),
                      cam.get("sensor_mode", int, None)),
        power=r.get("power", str, ""), sources=r.strings("sources"),
        device_tree=d.strings("device_tree"), compatible=d.strings("compatible"), gpu_names=d.strings("gpu_names"),
        memory_gb=mem, software=tuple(software),
        tensorrt_rtx=r.get("tensorrt_rtx", bool, False), cpu_threads=_threads(r), path=source, raw=data,
    )


def _memory(r: Keys) -> tuple[float, ...]:
    out = []
    for i, m in enumerate(r.get("memory_gb", list, [])):
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m < float("inf"):
            raise r.fail(f"memory_gb[{i}]", f"must be a positive number of gigabytes, e.g. 8, got {m!r}")
        out.append(float(m))
    return tuple(out)


def _threads(r: Keys) -> int | None:
    n = r.get("cpu_threads", int, None)
    if n is not None and not 1 <= n <= 64:
        raise r.fail("cpu_threads", f"must be 1-64, got {n}")
    return n  # type: ignore[no-any-return]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where present: start-up matters
_PARSED: dict[tuple[str, int, int], dict[str, Any]] = {}


def _read(path: Path) -> dict[str, Any]:
    """A profile file's mapping, parsed once per process while the file is unchanged."""
    try:
        st = path.stat()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from exc
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _PARSED:
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        if not isinstance(data, dict):
            raise UsageError(f"{path}: a profile must be a YAML mapping of keys")
        _PARSED[key] = data
    return copy.deepcopy(_PARSED[key])


def load_file(path: Path, _seen: tuple[str, ...] = ()) -> Profile:
    data = _read(path)
    parent = data.get("extends")
    if parent is not None:
        if not isinstance(parent, str):
            raise UsageError(f"{path}: key 'extends' must be a profile name or path")
        if parent in _seen:
            raise UsageError(f"{path}: 'extends' loops back to {parent!r}")
        try:
            ppath = Path(parent) if parent.endswith((".yaml", ".yml")) else _find(parent, path.parent)
        except UsageError as exc:
            raise UsageError(f"{path}: key 'extends': {exc}") from exc
        base = load_file(ppath, (*_seen, parent)).raw
        own = {k: v for k, v in data.items() if k != "extends"}
        data = _merge({k: v for k, v in base.items() if k != "extends"}, own)
    return _validate(data, str(path))


def _find(name: str, near: Path | None = None) -> Path:
    for folder in [near, user_dir(), SHIPPED]:
        if folder is not None and (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    known = [p.name for p in all_profiles()]
    import difflib

    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6) or [k for k in known if name.lower() in k][:3]
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    broken = f" ({skipped()[0]})" if _SKIPPED else ""
    raise UsageError(f"unknown profile {name!r}; {hint}edgekit profiles lists them: {', '.join(known)}{broken}")


_SKIPPED: dict[str, str] = {}  # user profile file -> why it cannot be loaded


def all_profiles() -> list[Profile]:
    """Every loadable profile, the user's overriding shipped ones of the same name.

    A broken user profile is left out (see :func:`skipped`) rather than raising: profiles are
    read by every command that detects the device (classify, run, bench), and one bad file the
    user is not asking for must not stop those. Naming it (``--profile``, ``profiles show``)
    still raises its error.
    """
    found: dict[str, Profile] = {}
    _SKIPPED.clear()
    for folder in (SHIPPED, user_dir()):
        if folder.is_dir():
            for f in sorted(folder.glob("*.yaml")):
                if folder == SHIPPED:
                    prof = load_file(f)  # a broken shipped profile is edgekit's bug: fail loudly
                else:
                    try:
                        prof = load_file(f)
                    except UsageError as exc:
                        _SKIPPED[str(f)] = str(exc)
                        continue
                found[prof.name] = prof
    return list(found.values())


def skipped() -> list[str]:
    """Why each user profile that :func:`all_profiles` left out cannot be loaded, one line each."""
    return [f"ignored a broken user profile: {why}" for _, why in sorted(_SKIPPED.items())]


def get(name_or_path: str) -> Profile:
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise UsageError(f"profile file {path} does not exist")
        return load_file(path)
    return load_file(_find(name_or_path))
