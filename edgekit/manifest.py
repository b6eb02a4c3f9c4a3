"""The bundle manifest: a versioned JSON document, validated when loaded.

Everything the runtime needs is here; artifact paths are relative to the bundle and may
not leave it; every artifact carries its sha256.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from edgekit.bundle.paths import CONTROL, MANIFEST  # noqa: F401 (mf.MANIFEST, mf.CONTROL as before)
from edgekit.errors import BundleError
from edgekit.keys import REQUIRED, Keys
from edgekit.preprocess import Preprocess

SCHEMA = "edgekit.bundle"
SCHEMA_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8", "int8-cpu")
# model names become file and directory names (Triton models, DeepStream and JetPack 4 files)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# tensor names are written into Triton's config.pbtxt and DeepStream files: a conservative set
TENSOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,127}")
HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_BYTES = 16_000_000  # a manifest is a few kB; anything near this is not one


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "uint8", "float32"
    layout: str  # "NHWC", "NCHW", "NC"
    shape: tuple[int | str, ...]  # "batch" for the dynamic dimension
    color_order: str | None = None  # channel order of an image input


@dataclass(frozen=True)
class Artifact:
    path: str
    kind: str  # "onnx", "labels", "engine", "calibration"
    sha256: str
    bytes: int
    precision: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    weights: str
    weights_sha256: str | None
    num_classes: int
    params: int
    opset: int


@dataclass(frozen=True)
class Manifest:
    model: ModelInfo
    input: TensorSpec
    output: TensorSpec
    preprocess: Preprocess
    labels: str
    artifacts: tuple[Artifact, ...]
    engines: tuple[dict[str, Any], ...] = ()
    validation: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    edgekit_version: str = ""
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def artifact(self, kind: str, precision: str | None = None) -> Artifact | None:
        for a in self.artifacts:
            if a.kind == kind and (precision is None or a.precision == precision):
                return a
        return None

    def with_artifact(self, art: Artifact) -> Manifest:
        rest = tuple(a for a in self.artifacts if a.path != art.path)
        return replace(self, artifacts=rest + (art,))

    def to_json(self) -> str:
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        ordered = {"schema": d.pop("schema"), "schema_version": d.pop("schema_version"), **d}
        return json.dumps(ordered, indent=2) + "\n"


# ------------------------------------------------------------------ validation


class _Reader(Keys):
    error = BundleError
    advice = "; rebuild the bundle with edgekit export"


def _tensor(r: Keys) -> TensorSpec:
    shape = r.get("shape", list)
    for i, d in enumerate(shape):
        if not (isinstance(d, str) or (isinstance(d, int) and d > 0)):
            raise r.fail(f"shape[{i}]", f"must be a positive int or a name, got {d!r}")
    dtype = r.get("dtype", str)
    if dtype not in ("uint8", "float32", "float16"):
        raise r.fail("dtype", f"must be uint8, float32 or float16, got {dtype!r}")
    name = r.get("name", str)
    if not TENSOR_NAME.fullmatch(name):
        raise r.fail("name", f"must be a tensor name (a letter or '_', then letters, digits, '_', '.', ':', '/', "
                             f"'-'; at most 128), got {_shown(name)}")
    return TensorSpec(name, dtype, r.get("layout", str), tuple(shape),
                      r.get("color_order", str, None))


def _shown(v: str) -> str:
    return repr(v) if len(v) <= 40 else repr(v[:37]) + "..."


def _text(r: Keys, key: str, default: Any = REQUIRED, limit: int = 200) -> Any:
    """A string that is printed or written into other files: no control characters, at most ``limit``."""
    v = r.get(key, str, default) if default is not REQUIRED else r.get(key, str)
    if isinstance(v, str) and (CONTROL.search(v) or len(v) > limit):
        raise r.fail(key, f"must be text of at most {limit} characters without control characters, got {_shown(v)}")
    return v


def safe_relpath(source: str, rel: str, key: str) -> str:
    """Refuse artifact paths that are absolute or climb out of the bundle, and odd ones."""
    p = PurePosixPath(rel)
    if CONTROL.search(rel) or any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in p.parts):
        raise BundleError(f"{source}: key '{key}' is not a plain relative path ({_shown(rel)}: control characters "
                          "or a component over 255 bytes); rebuild the bundle with edgekit export")
    if p.is_absolute() or ".." in p.parts or "\\" in rel or rel.strip() == "" or ":" in rel:
        raise BundleError(
            f"{source}: key '{key}' points outside the bundle ({rel!r}); artifact paths must be "
            "relative and inside the bundle directory"
        )
    return rel


def safe_name(source: str, name: str, key: str) -> str:
    """Refuse names that could not be one plain file name (separators, '..', odd characters)."""
    if not NAME.fullmatch(name) or ".." in name:
        shown = repr(name) if len(name) <= 40 else repr(name[:37]) + "..."
        raise BundleError(
            f"{source}: key '{key}' must be a plain name (letters, digits, '.', '_', '-'; at most 100; "
            f"no '..'), got {shown}; it names output files. Rebuild the bundle with edgekit export"
        )
    return name


def _engine_entry(source: str, er: Keys) -> None:
    """An engine entry: its path inside the bundle, and what is printed or written into Triton configs sane."""
    if not isinstance(er.data, dict):
        raise er.fail("", f"must be an object, got {type(er.data).__name__}")
    safe_relpath(source, er.get("path", str), er.path("path"))
    sha = er.get("sha256", str, None)
    if sha is not None and not HEX64.fullmatch(sha):
        raise er.fail("sha256", "must be 64 lowercase hex digits")
    for key in ("key", "trt_flavour", "trt_version", "compute_capability", "onnx", "built"):
        _text(er, key, None)
    precision = er.get("precision", str)
    if precision not in PRECISIONS:
        raise er.fail("precision", f"must be one of {', '.join(PRECISIONS)}, got {_shown(precision)}")
    safe_name(source, er.get("device", str), er.path("device"))
    dla = er.get("dla_core", int, None)
    if dla is not None and dla < 0:
        raise er.fail("dla_core", f"must be 0 or more, got {dla}")
    b = er.sub("batch")
    lo, opt, hi = (b.get(k, int) for k in ("min", "opt", "max"))
    if not 1 <= lo <= opt <= hi:
        raise b.fail("", f"must have 1 <= min <= opt <= max, got {lo}, {opt}, {hi}")


def parse(text: str, source: str) -> Manifest:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{source}: not valid JSON ({exc}); rebuild the bundle with edgekit export") from None
    except RecursionError:
        raise BundleError(f"{source}: nested too deeply to be a manifest; rebuild the bundle with edgekit export"
                          ) from None
    r = _Reader(source, data)
    schema = r.get("schema", str)
    if schema != SCHEMA:
        raise r.fail("schema", f"must be {SCHEMA!r}, got {schema!r}")
    version = r.get("schema_version", int)
    if version < 1:
        raise r.fail("schema_version", f"must be 1 or more, got {version}")
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"{source}: schema version {version} is newer than this edgekit understands "
            f"({SCHEMA_VERSION}); upgrade edgekit: pip install -U edgekit"
        )
    m = r.sub("model")
    model = ModelInfo(safe_name(source, m.get("name", str), m.path("name")), _text(m, "version"),
                      _text(m, "weights", limit=4096), _text(m, "weights_sha256", None), m.get("num_classes", int),
                      m.get("params", int), m.get("opset", int))
    p = r.sub("preprocess")
    try:
        pre = Preprocess(
            p.get("height", int), p.get("width", int), p.get("crop_fraction", float),
            p.get("interpolation", str), tuple(p.get("mean", list)), tuple(p.get("std", list)),  # type: ignore[arg-type]
            p.get("color_order", str), p.get("input_range", float),
        )
    except Exception as exc:
        raise p.fail("", f"is invalid ({exc})") from exc
    arts: list[Artifact] = []
    for i, a in enumerate(r.get("artifacts", list)):
        ar = r.item("artifacts", i, a)
        path = safe_relpath(source, ar.get("path", str), ar.path("path"))
        precision = ar.get("precision", str, None)
        if precision is not None and precision not in PRECISIONS:
            raise ar.fail("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        sha = ar.get("sha256", str)
        if not HEX64.fullmatch(sha):
            raise ar.fail("sha256", "must be 64 lowercase hex digits")
        size = ar.get("bytes", int)
        if size < 0:
            raise ar.fail("bytes", f"must be 0 or more, got {size}")
        if any(a.path == path for a in arts):
            raise ar.fail("path", f"lists {path!r} a second time; each artifact once")
        arts.append(Artifact(path, _text(ar, "kind", limit=40), sha, size, precision))
    labels = safe_relpath(source, r.get("labels", str), "labels")
    engines = tuple(r.get("engines", list, ()))
    for i, e in enumerate(engines):
        _engine_entry(source, r.item("engines", i, e))
    return Manifest(
        model=model, input=_tensor(r.sub("input")), output=_tensor(r.sub("output")),
        preprocess=pre, labels=labels, artifacts=tuple(arts), engines=engines,
        validation=r.get("validation", dict, {}),
        created=_text(r, "created", ""),
        edgekit_version=_text(r, "edgekit_version", ""),
        schema=schema, schema_version=version,
    )


def read(bundle: str | Path, check_labels: bool = True) -> Manifest:
    """The bundle's manifest, and (``check_labels``) its labels file checked like every artifact:
    inside the bundle, matching its sha256, UTF-8, one name per class."""
    from edgekit import bundle as bundle_mod

    path = Path(bundle) / MANIFEST
    if not path.is_file():  # killed while being replaced? the old bundle comes back
        bundle_mod.restore_if_missing(Path(bundle))
    if not path.is_file():
        raise BundleError(
            f"{bundle} is not a bundle: {MANIFEST} is missing; make one with "
            "edgekit export --model NAME -o DIR"
        )
    real = bundle_mod.confined(Path(bundle), MANIFEST)
    with contextlib.suppress(OSError):
        if real.stat().st_size > MAX_BYTES:
            raise BundleError(f"{path} is over {MAX_BYTES // 1_000_000} MB, far more than a manifest; rebuild the "
                              "bundle with edgekit export")
    try:
        text = real.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); rebuild the bundle with "
                          "edgekit export") from None
    man = parse(text, str(path))
    if check_labels:
        bundle_mod.read_labels(Path(bundle), man)
    return man


def seven_bit_weights(man: Manifest) -> bool:
    """Whether the bundle's CPU INT8 form has 7-bit weights (calibrated by edgekit 0.1 with the
    saturation fix, or later): the form that CPUs without VNNI compute without saturating."""
    v = man.validation.get("int8")
    return isinstance(v, dict) and v.get("cpu_weight_bits") == 7
