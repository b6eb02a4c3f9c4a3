"""`edgekit export-triton`: a bundle as Triton Inference Server models (a model repository).

One model per backend: the ONNX model on Triton's ONNX Runtime backend (``onnxruntime_onnx``)
and, where the bundle has an engine, the TensorRT plan (``tensorrt_plan``). Inputs, outputs,
dtypes and dims come from the bundle: the input is the frame itself (uint8 HWC, BGR) since
the graph does the rest, so a client sends a resized, cropped frame and nothing else. The
labels become Triton's classification labels (``label_filename``), so ``class_count=k``
requests return "score:index:label" strings.

``config.pbtxt`` is protobuf text; tests parse it with Triton's own ModelConfig schema
(shipped in ``tritonclient``). Writing needs no Triton package.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.errors import BundleError, UsageError

DTYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "float16": "TYPE_FP16", "int8": "TYPE_INT8"}
KINDS = ("auto", "gpu", "cpu")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # a directory of the repository


@dataclass(frozen=True)
class TritonRequest:
    bundle: Path
    repository: Path
    max_batch: int = 8
    instances: int = 1
    kind: str = "auto"  # instance group kind; auto: GPU for plans and GPU precisions, CPU for int8-cpu
    precision: str | None = None  # which ONNX model; None: fp32 (fp16 on GPU instances when present)
    engine: bool = True  # include the TensorRT plan when the bundle has one
    name: str | None = None  # model name prefix; default: the zoo model name
    queue_delay_us: int = 100
    force: bool = False


@dataclass(frozen=True)
class TritonModel:
    name: str
    platform: str
    path: Path


def _dims(dims: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def config_text(name: str, platform: str, man: mf.Manifest, max_batch: int, instances: int, kind: str,
                queue_delay_us: int, model_file: str) -> str:
    inp, out = man.input, man.output
    static = isinstance(inp.shape[0], int)
    in_dims = [int(d) for d in (inp.shape if static else inp.shape[1:])]  # type: ignore[arg-type]
    out_dims = [int(d) for d in (out.shape if static else out.shape[1:])]  # type: ignore[arg-type]
    if inp.dtype not in DTYPES or out.dtype not in DTYPES:
        raise UsageError(f"Triton has no type for {inp.dtype}/{out.dtype}")
    fmt = {"NHWC": "FORMAT_NHWC", "NCHW": "FORMAT_NCHW"}.get(inp.layout, "FORMAT_NONE")
    mb = 0 if static else max_batch
    preferred = [b for b in (1, 2, 4, 8, 16, 32) if b <= mb] or [1]
    lines = [
        f'name: "{_q(name)}"',
        f'platform: "{platform}"',
        f"max_batch_size: {mb}",
        f'default_model_filename: "{_q(model_file)}"',
        "input [",
        "  {",
        f'    name: "{_q(inp.name)}"',
        f"    data_type: {DTYPES[inp.dtype]}",
        f"    format: {fmt}",
        f"    dims: {_dims(in_dims)}",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{_q(out.name)}"',
        f"    data_type: {DTYPES[out.dtype]}",
        f"    dims: {_dims(out_dims)}",
        '    label_filename: "labels.txt"',
        "  }",
        "]",
        "instance_group [",
        "  {",
        f"    count: {instances}",
        f"    kind: KIND_{kind.upper()}",
        "  }",
        "]",
    ]
    if mb > 0:
        lines += [
            "dynamic_batching {",
            f"  preferred_batch_size: {_dims(preferred)}",
            f"  max_queue_delay_microseconds: {queue_delay_us}",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _q(v: object) -> str:
    """A pbtxt string literal's contents: quotes, backslashes and control characters escaped."""
    return "".join(c if c.isprintable() and c not in '"\\' else ("\\" + c if c in '"\\' else f"\\x{ord(c) & 0xff:02x}")
                   for c in str(v))


def _c(v: object) -> str:
    """Text for a pbtxt comment: one line, printable only."""
    return "".join(c if c.isprintable() else "?" for c in str(v))[:100]


def _model_name(name: str, source: str) -> str:
    if not MODEL_NAME.fullmatch(name) or ".." in name:
        raise BundleError(f"Triton model name {name!r} (from {source}) is not a plain directory name: use letters, "
                          "digits, '.', '_' and '-' only, without '..'; rebuild the bundle or pass --name")
    return name


def _write_model(repo: Path, name: str, platform: str, text: str, model_src: Path, model_file: str, labels: str,
                 preprocess_json: str, force: bool) -> TritonModel:
    target = bundle_mod.child(repo, name, "Triton model name")
    with bundle_mod.staging(target, force, mark="config.pbtxt") as tmp:
        (tmp / "1").mkdir()
        shutil.copyfile(model_src, tmp / "1" / model_file)  # the umask's mode, not the bundle file's
        (tmp / "labels.txt").write_text(labels, encoding="utf-8")
        (tmp / "config.pbtxt").write_text(text, encoding="utf-8")
        (tmp / "preprocess.json").write_text(preprocess_json, encoding="utf-8")  # for clients; Triton ignores it
    return TritonModel(name, platform, target)


def export_triton(req: TritonRequest, log: Any = lambda _: None) -> list[TritonModel]:
    if req.kind not in KINDS:
        raise UsageError(f"unknown instance kind {req.kind!r}; choose from {', '.join(KINDS)}")
    if req.max_batch < 1 or req.instances < 1:
        raise UsageError(f"--max-batch and --instances must be at least 1 (got {req.max_batch}, {req.instances})")
    if req.name is not None and (not MODEL_NAME.fullmatch(req.name) or ".." in req.name):
        raise UsageError(f"--name {req.name!r} is not a plain Triton model name: use letters, digits, '.', '_' "
                         "and '-' only, without '..'")
    man = mf.read(req.bundle)
    labels = "\n".join(bundle_mod.read_labels(req.bundle, man)) + "\n"
    pre = json.dumps(asdict(man.preprocess), indent=2) + "\n"
    prefix = req.name or man.model.name
    models = []
    precision = req.precision or "fp32"
    art = man.artifact("onnx", precision)
    if art is None:
        have = sorted({a.precision for a in man.artifacts if a.kind == "onnx" and a.precision})
        raise UsageError(f"{req.bundle} has no {precision} model; it has: {', '.join(have)}")
    kind = req.kind if req.kind != "auto" else ("cpu" if precision == "int8-cpu" else "gpu")
    first = man.input.shape[0]
    if isinstance(first, int):
        log(f"note: the model has a static batch of {first}; max_batch_size 0 (no dynamic batching)")
    name = _model_name(f"{prefix}_onnx_{precision.replace('-', '_')}", str(req.bundle))
    platform = "onnxruntime_onnx"
    text = config_text(name, platform, man, req.max_batch, req.instances, kind, req.queue_delay_us, "model.onnx")
    models.append(_write_model(req.repository, name, platform, text, bundle_mod.artifact_path(req.bundle, art),
                               "model.onnx", labels, pre, req.force))
    if req.engine:
        for entry in man.engines:
            if entry.get("dla_core") is not None:
                continue  # Triton runs engines on the GPU
            if entry.get("trt_flavour") != "tensorrt":
                log(f"note: {entry['path']} is a {entry.get('trt_flavour')} engine, which Triton's TensorRT backend "
                    "cannot load; build one with NVIDIA's TensorRT on the server (edgekit build) and export again")
                continue
            hi = int(entry["batch"]["max"])
            mb = min(req.max_batch, hi)
            if mb < req.max_batch:
                log(f"note: {entry['path']} was built for batch up to {hi}; its max_batch_size is {mb} "
                    f"(rebuild with edgekit build --batch 1:{req.max_batch}:{req.max_batch} for more)")
            ename = _model_name(f"{prefix}_trt_{entry['precision']}_{str(entry['device']).replace('-', '_')}",
                                f"{req.bundle}'s engine {entry['path']}")
            platform = "tensorrt_plan"
            text = config_text(ename, platform, man, mb, req.instances, "gpu", req.queue_delay_us, "model.plan")
            built = f"{_c(entry['device'])} with {_c(entry.get('trt_flavour'))} {_c(entry.get('trt_version'))}"
            text = text.replace("instance_group [", f"# built for {built}: Triton must run the same TensorRT version\n"
                                "instance_group [", 1)
            plan = bundle_mod.engine_path(req.bundle, entry)
            if plan is None:
                raise UsageError(f"{req.bundle / str(entry['path'])} is missing or changed since it was built; "
                                 f"rebuild it with edgekit build {req.bundle}")
            models.append(_write_model(req.repository, ename, platform, text, plan, "model.plan", labels, pre,
                                       req.force))
    for m in models:
        log(f"wrote {m.path} ({m.platform})")
    return models
