"""The bundle manifest: a versioned JSON document, validated when loaded.

Everything the runtime needs is here; artifact paths are relative to the bundle and may
not leave it; every artifact carries its sha256.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from edgekit.errors import BundleError
from edgekit.keys import Keys
from edgekit.preprocess import Preprocess

SCHEMA = "edgekit.bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
PRECISIONS = ("fp32", "fp16", "int8", "int8-cpu")


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
    return TensorSpec(r.get("name", str), dtype, r.get("layout", str), tuple(shape),
                      r.get("color_order", str, None))


def safe_relpath(source: str, rel: str, key: str) -> str:
    """Refuse artifact paths that are absolute or climb out of the bundle."""
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or "\\" in rel or rel.strip() == "" or ":" in rel:
        raise BundleError(
            f"{source}: key '{key}' points outside the bundle ({rel!r}); artifact paths must be "
            "relative and inside the bundle directory"
        )
    return rel


def parse(text: str, source: str) -> Manifest:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{source}: not valid JSON ({exc}); rebuild the bundle with edgekit export") from exc
    r = _Reader(source, data)
    schema = r.get("schema", str)
    if schema != SCHEMA:
        raise r.fail("schema", f"must be {SCHEMA!r}, got {schema!r}")
    version = r.get("schema_version", int)
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"{source}: schema version {version} is newer than this edgekit understands "
            f"({SCHEMA_VERSION}); upgrade edgekit: pip install -U edgekit"
        )
    m = r.sub("model")
    model = ModelInfo(m.get("name", str), m.get("version", str), m.get("weights", str),
                      m.get("weights_sha256", str, None), m.get("num_classes", int),
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
    arts = []
    for i, a in enumerate(r.get("artifacts", list)):
        ar = r.item("artifacts", i, a)
        path = safe_relpath(source, ar.get("path", str), ar.path("path"))
        precision = ar.get("precision", str, None)
        if precision is not None and precision not in PRECISIONS:
            raise ar.fail("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        sha = ar.get("sha256", str)
        if len(sha) != 64:
            raise ar.fail("sha256", "must be 64 hex digits")
        arts.append(Artifact(path, ar.get("kind", str), sha, ar.get("bytes", int), precision))
    labels = safe_relpath(source, r.get("labels", str), "labels")
    engines = tuple(r.get("engines", list, ()))
    for i, e in enumerate(engines):
        er = r.item("engines", i, e)
        safe_relpath(source, er.get("path", str), er.path("path"))
    return Manifest(
        model=model, input=_tensor(r.sub("input")), output=_tensor(r.sub("output")),
        preprocess=pre, labels=labels, artifacts=tuple(arts), engines=engines,
        validation=r.get("validation", dict, {}),
        created=r.get("created", str, ""),
        edgekit_version=r.get("edgekit_version", str, ""),
        schema=schema, schema_version=version,
    )


def read(bundle: str | Path) -> Manifest:
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise BundleError(
            f"{bundle} is not a bundle: {MANIFEST} is missing; make one with "
            "edgekit export --model NAME -o DIR"
        )
    return parse(path.read_text(encoding="utf-8"), str(path))
