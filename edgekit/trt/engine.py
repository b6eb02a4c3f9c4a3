"""`edgekit build BUNDLE`: a TensorRT engine for one device profile, cached in the bundle.

The cache key covers the ONNX's sha256, precision, TensorRT flavour and version, profile and
compute capability, DLA core, batch shapes, workspace and optimisation level: a matching
engine is reused, anything else rebuilds. Plans stay plain TensorRT plans (trtexec,
DeepStream and Triton load them); their metadata goes in the manifest. A timing cache per
device and TensorRT version makes rebuilds faster.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit import profiles as prof_mod
from edgekit.callbacks import Log
from edgekit.errors import BundleError, UsageError
from edgekit.hashing import sha256_file

if TYPE_CHECKING:
    from edgekit.trt.compat import Features, Strategy

ENGINES = "engines"
# the plan names edgekit writes: PROFILE-PRECISION[-dlaN]-KEY12[-N].plan (N: a rebuild beside a listed plan)
_PLAN_NAME = re.compile(r"^[A-Za-z0-9._-]+-[0-9a-f]{12}(?:-[0-9]+)?\.plan$")


@dataclass(frozen=True)
class EngineRequest:
    bundle: Path
    precision: str | None = None  # None: the profile's default
    profile: str | None = None  # name or YAML path; None: detect this machine
    dla: int | None = None
    batch: prof_mod.Batch | None = None
    workspace_mib: int | None = None
    opt_level: int | None = None
    version_compatible: bool = False
    hardware_compatible: bool = False
    force: bool = False
    prefer: str | None = None  # "tensorrt" or "tensorrt_rtx"


@dataclass(frozen=True)
class EngineResult:
    path: Path
    entry: dict[str, Any]
    reused: bool


def parse_batch(text: str) -> prof_mod.Batch:
    """'8' or 'min:opt:max'."""
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = [1, parts[0], parts[0]]
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        raise UsageError(f"--batch must be N or min:opt:max with 1 <= min <= opt <= max, got {text!r}")
    return prof_mod.Batch(*parts)


def timing_cache_path(profile: str, flavour: str, version: str) -> Path:
    root = Path(os.environ.get("EDGEKIT_CACHE", Path.home() / ".cache" / "edgekit"))
    return root / "timing" / f"{profile}-{flavour}-{version}.cache"


def cache_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _check_implicit_gate(man: mf.Manifest, bundle: Path, log: Log) -> None:
    """Implicit INT8 runs every tensor at its calibration.cache scale (DLA): calibration simulated
    it; refuse what failed that gate rather than ship a DLA engine known to disagree with FP32."""
    v = man.validation.get("int8")
    dla = v.get("dla") if isinstance(v, dict) else None
    if not isinstance(dla, dict):
        log("note: this bundle's implicit INT8 (calibration.cache) was not simulated when it was calibrated; "
            f"edgekit calibrate {bundle} checks it")
        return
    if str(dla.get("status", "")).lower() == "fail":
        agree = dla.get("top1_agreement")
        from edgekit.quant.calibrate import GateError

        raise GateError(
            f"implicit INT8 from calibration.cache (the DLA path) failed the accuracy gate when {bundle} was "
            f"calibrated (top-1 agreement with FP32 {agree}); build for the GPU (without --dla), or recalibrate on "
            "more images from your camera (edgekit calibrate)")


def _check_compatibility_flags(req: EngineRequest, profile: prof_mod.Profile, feats: Features,
                               trt_name: str) -> None:
    """Refuse --version-compatible / --hardware-compatible where they cannot apply, before any work."""
    if req.version_compatible and not feats.version_compatible:
        raise UsageError(f"--version-compatible needs TensorRT 8.6 or later, this is {trt_name}; "
                         "drop the flag (rebuild the engine after upgrading TensorRT instead)")
    if req.hardware_compatible and profile.kind == "jetson":
        raise UsageError(f"--hardware-compatible is for desktop GPUs (Ampere and later), not Jetson boards such as "
                         f"{profile.name}; drop the flag and build on each board")
    if req.hardware_compatible and not feats.hardware_compatible:
        raise UsageError(f"--hardware-compatible needs TensorRT 8.6 or later, this is {trt_name}; drop the flag")


def build(req: EngineRequest, log: Log = lambda _: None) -> EngineResult:
    """Build (or reuse) the engine; the bundle is locked throughout, and its manifest only ever lists
    plans that are there: a new plan gets a name of its own, the manifest follows, replaced plans go last."""
    mf.read(req.bundle)  # a clear error for what is not a bundle, before any lock file is made beside it
    with bundle_mod.lock(req.bundle):
        bundle_mod.tidy(req.bundle)
        man = mf.read(req.bundle)  # as it is now that nobody else changes it
        _check_engines_dir(req.bundle)
        _tidy_engines(req.bundle, man)
        bundle_mod.pause_point("engine.locked")
        return _build_locked(req, man, log)


def _check_engines_dir(bundle: Path) -> None:
    """engines/ must be a real directory inside the bundle: a build deletes and writes plans there."""
    folder = bundle / ENGINES
    if not os.path.lexists(folder):
        return
    root = os.path.realpath(bundle)
    if os.path.islink(folder) or os.path.dirname(os.path.realpath(folder)) != root or not folder.is_dir():
        raise BundleError(f"{folder} is a symlink or not a directory inside the bundle; refusing to build into it "
                          f"(plans are written and removed there); remove it (rm {folder}) and build again")


def _own_plan(bundle: Path, rel: str) -> bool:
    """A plan path a build may delete: engines/NAME.plan of edgekit's naming, inside the bundle."""
    parts = rel.split("/")
    if len(parts) != 2 or parts[0] != ENGINES or not _PLAN_NAME.match(parts[1]):
        return False
    try:
        bundle_mod.confined(bundle, rel)
    except BundleError:
        return False
    return True


def _tidy_engines(bundle: Path, man: mf.Manifest) -> None:
    """What a killed build left in engines/ (lock held): partial writes, and plans the manifest does not list
    (written before the manifest, or replaced but not yet removed when the build was killed)."""
    folder = bundle / ENGINES
    if not folder.is_dir():
        return
    bundle_mod.recover(folder, inside=True)  # .NAME.plan.tmp-PID-* of write_bytes_atomic
    listed = {str(e.get("path")) for e in man.engines}
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            if _PLAN_NAME.match(p.name) and f"{ENGINES}/{p.name}" not in listed and p.is_file():
                p.unlink()


def _fresh_name(bundle: Path, stem: str) -> str:
    """``engines/STEM.plan``, or ``STEM-2.plan``... when that is taken: a plan the manifest lists is never
    written over (a kill before the manifest is written would leave it listed with another sha256)."""
    name, n = f"{ENGINES}/{stem}.plan", 1
    while os.path.lexists(bundle / name):
        n += 1
        name = f"{ENGINES}/{stem}-{n}.plan"
    return name


def _build_locked(req: EngineRequest, man: mf.Manifest, log: Log) -> EngineResult:
    profile = prof_mod.get(req.profile) if req.profile else prof_mod.detect()[0]
    if req.profile is None:
        log(f"profile: {profile.name} (detected)")
    if profile.kind == "cpu":
        raise UsageError(
            "no NVIDIA GPU or Jetson detected (profile 'cpu'): there is no engine to build, the bundle runs on "
            "ONNX Runtime; to build ahead of time with TensorRT-RTX name an RTX profile, e.g. --profile desktop-ada"
        )
    precision = req.precision or profile.default_precision
    dla_batch = prof_mod.Batch(prof_mod.DLA_BATCH, prof_mod.DLA_BATCH, prof_mod.DLA_BATCH)
    batch = req.batch or (dla_batch if req.dla is not None else profile.batch)
    workspace = req.workspace_mib or profile.workspace_mib
    prof_mod.check_request(profile, precision, req.dla, batch, req.workspace_mib)

    from edgekit.trt import compat
    from edgekit.trt.build import BuildOptions, build_engine
    from edgekit.trt.parse import load_trt

    trt = load_trt(req.prefer)
    if trt.__name__ == "tensorrt_rtx" and not profile.tensorrt_rtx:
        raise UsageError(f"TensorRT-RTX does not target {profile.name} ({profile.architecture}); install "
                         "NVIDIA's TensorRT (JetPack on a Jetson) or choose an RTX profile")
    feats = compat.features(trt.__name__, trt.__version__)
    _check_compatibility_flags(req, profile, feats, f"{trt.__name__} {trt.__version__}")
    strat = compat.strategy(feats, precision, req.dla is not None)
    art = man.artifact("onnx", strat.onnx_precision)
    if art is None:
        how = "edgekit calibrate BUNDLE" if strat.onnx_precision in ("int8", "fp16") else "edgekit export"
        raise UsageError(f"{req.bundle} has no {strat.onnx_precision} ONNX model, which a {precision} build with "
                         f"{trt.__name__} {trt.__version__} needs; make it with {how}")
    onnx_file = bundle_mod.artifact_path(req.bundle, art)
    calib_text = None
    if strat.calibrator:
        _check_implicit_gate(man, req.bundle, log)
        cart = next((a for a in man.artifacts if a.path == "calibration.cache"), None)
        if cart is None:
            raise UsageError(f"{req.bundle} has no calibration.cache for implicit INT8 on DLA; run edgekit calibrate")
        calib_text = bundle_mod.artifact_text(req.bundle, cart)
    target_cc = prof_mod.target_compute_capability(profile, prof_mod.detect()[1])
    fields = {
        "onnx_sha256": art.sha256, "precision": precision, "flavour": trt.__name__, "trt_version": trt.__version__,
        "profile": profile.name, "compute_capability": target_cc, "dla_core": req.dla,
        "batch": [batch.min, batch.opt, batch.max], "workspace_mib": workspace,
        "opt_level": req.opt_level if req.opt_level is not None else profile.opt_level,
        "version_compatible": req.version_compatible, "hardware_compatible": req.hardware_compatible,
        "calibration_sha256": hashlib.sha256(calib_text.encode()).hexdigest() if calib_text else None,
    }
    key = cache_key(fields)
    for entry in man.engines:
        # entries written before they recorded the compatibility flags are rebuilt: the runtime needs them
        if entry.get("key") == key and not req.force and "version_compatible" in entry:
            path = bundle_mod.engine_path(req.bundle, entry)
            if path is not None:
                log(f"engine up to date: {entry['path']} (same ONNX, precision, TensorRT, device and shapes)")
                return EngineResult(path, entry, True)
    tc_path = timing_cache_path(profile.name, trt.__name__, trt.__version__)
    timing = tc_path.read_bytes() if tc_path.is_file() else None
    opts = BuildOptions(
        batch=(batch.min, batch.opt, batch.max), workspace_mib=workspace,
        opt_level=fields["opt_level"], dla_core=req.dla, target_cc=target_cc,
        version_compatible=req.version_compatible, hardware_compatible=req.hardware_compatible,
        timing_cache=timing, calibration_cache=calib_text,
    )
    built = build_engine(onnx_file, precision, opts, prefer=trt.__name__, log=log)
    log(f"built in {built.seconds:.1f} s (parse {built.phases.get('parse', 0):.1f} s, "
        f"build {built.phases.get('build', 0):.1f} s)")
    name = _fresh_name(req.bundle, f"{profile.name}-{precision}"
                       f"{'-dla' + str(req.dla) if req.dla is not None else ''}-{key[:12]}")
    target = req.bundle / name
    target.parent.mkdir(exist_ok=True)
    bundle_mod.write_bytes_atomic(target, built.plan)
    bundle_mod.pause_point("engine.plan-written")
    if built.timing_cache:
        tc_path.parent.mkdir(parents=True, exist_ok=True)
        bundle_mod.write_bytes_atomic(tc_path, built.timing_cache)
    entry = {
        "path": name, "sha256": sha256_file(target), "bytes": target.stat().st_size, "key": key,
        "precision": precision, "onnx": art.path, "trt_flavour": trt.__name__, "trt_version": trt.__version__,
        "device": profile.name, "compute_capability": target_cc, "dla_core": req.dla,
        "batch": {"min": batch.min, "opt": batch.opt, "max": batch.max}, "workspace_mib": workspace,
        "opt_level": fields["opt_level"], "strongly_typed": strat.strongly_typed,
        "builder_flags": list(strat.builder_flags), "implicit_int8": strat.calibrator,
        "profiles": built.profiles, "profile_sharing": built.profile_sharing,
        # what the plan was built with, which the runtime and check_engine act on
        "version_compatible": built.version_compatible, "hardware_compatible": built.hardware_compatible,
        "build_seconds": round(built.seconds, 2),
        "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    kept = [e for e in man.engines if e.get("path") != name and not (
        e.get("device") == profile.name and e.get("precision") == precision and e.get("dla_core") == req.dla)]
    new = replace(man, engines=tuple(kept) + (entry,))
    try:
        bundle_mod.write_text_atomic(req.bundle / mf.MANIFEST, new.to_json())
    except BaseException:
        target.unlink(missing_ok=True)  # listed nowhere
        raise
    bundle_mod.pause_point("engine.manifest-written")
    for e in man.engines:  # replaced engines: their plan files go too, now that no manifest lists them
        if e not in kept and e.get("path") != name and _own_plan(req.bundle, str(e.get("path"))):
            with contextlib.suppress(OSError):  # never a file outside engines/ nor one edgekit did not name
                (req.bundle / str(e["path"])).unlink()
    return EngineResult(target, entry, False)


def build_bare(onnx_path: Path, precision: str | None, profile_name: str | None, batch: prof_mod.Batch | None = None,
               workspace_mib: int | None = None, out: Path | None = None, prefer: str | None = None,
               log: Log = lambda _: None) -> EngineResult:
    """An engine from a bare ONNX file (no bundle): the plan, and its metadata beside it as JSON."""
    import onnx

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UsageError(f"{onnx_path} does not exist")
    profile = prof_mod.get(profile_name) if profile_name else prof_mod.detect()[0]
    if profile.kind == "cpu":
        raise UsageError("no NVIDIA GPU or Jetson detected (profile 'cpu'): name a profile to build ahead of time "
                         "with TensorRT-RTX, e.g. --profile desktop-ada")
    precision = precision or profile.default_precision
    batch = batch or profile.batch
    prof_mod.check_request(profile, precision, None, batch, workspace_mib)
    from edgekit.trt import compat
    from edgekit.trt.parse import load_trt

    trt = load_trt(prefer)
    feats = compat.features(trt.__name__, trt.__version__)
    strat = compat.strategy(feats, precision, False)
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others
        raise UsageError(f"{onnx_path} is not a readable ONNX model ({exc})") from exc
    has_qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    if precision == "int8" and not has_qdq:
        raise UsageError(f"{onnx_path.name} has no INT8 scales (no Q/DQ nodes): make a bundle and calibrate it "
                         "(edgekit build --model NAME --int8), or give a Q/DQ ONNX")
    target = Path(out) if out else onnx_path.with_name(f"{onnx_path.stem}.{profile.name}-{precision}.plan")
    home = target.parent  # a plan written into a bundle (its model.onnx's): the bundle is locked meanwhile
    guard = bundle_mod.lock(home) if (home / mf.MANIFEST).is_file() else contextlib.nullcontext()
    with guard:  # (one name: parenthesised context managers are Python 3.9+)
        return _bare_locked(onnx_path, target, precision, profile, batch, workspace_mib, trt, strat, log)


def _bare_locked(onnx_path: Path, target: Path, precision: str, profile: prof_mod.Profile, batch: prof_mod.Batch,
                 workspace_mib: int | None, trt: Any, strat: Strategy, log: Log) -> EngineResult:
    import tempfile

    from edgekit.trt.build import BuildOptions, build_engine

    with tempfile.TemporaryDirectory(prefix="edgekit-bare-") as tmp:
        source = onnx_path
        if precision == "fp16" and strat.onnx_precision == "fp16":
            log("converting to an FP16-typed ONNX for a strongly typed build")
            from edgekit.quant.quantize import to_fp16

            source = Path(tmp) / "model.fp16.onnx"
            to_fp16(onnx_path, source)
        opts = BuildOptions(batch=(batch.min, batch.opt, batch.max),
                            workspace_mib=workspace_mib or profile.workspace_mib, opt_level=profile.opt_level,
                            target_cc=profile.compute_capability[0] if profile.compute_capability else None)
        built = build_engine(source, precision, opts, prefer=trt.__name__, log=log)
    bundle_mod.write_bytes_atomic(target, built.plan)
    entry = {"path": target.name, "sha256": sha256_file(target), "onnx": onnx_path.name,
             "onnx_sha256": sha256_file(onnx_path), "precision": precision, "trt_flavour": trt.__name__,
             "trt_version": trt.__version__, "device": profile.name, "batch": {"min": batch.min, "opt": batch.opt,
                                                                               "max": batch.max},
             "build_seconds": round(built.seconds, 2)}
    bundle_mod.write_text_atomic(target.with_name(target.name + ".json"), json.dumps(entry, indent=2) + "\n")
    return EngineResult(target, entry, False)
