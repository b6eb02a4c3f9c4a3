"""DeepStream's config files: the keys Gst-nvinfer and deepstream-app accept, and writing, parsing and validating them.

Keys and values follow DeepStream's Gst-nvinfer documentation and its property parser
(``gstnvinfer_property_parser.h``). Split from edgekit.deploy.deepstream, which writes the configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import UsageError

# [property] keys of Gst-nvinfer: DeepStream 6.2's gstnvinfer_property_parser.h, plus keys the 6.4-9.2
# API reference pages add (auto-inc-mem, max-gpu-mem-per, dump-*-tensor). edgekit writes a subset.
NVINFER_KEYS = frozenset({
    "gpu-id", "net-scale-factor", "offsets", "model-color-format", "infer-dims", "network-input-order",
    "network-mode", "onnx-file", "model-engine-file", "int8-calib-file", "labelfile-path", "batch-size",
    "network-type", "process-mode", "gie-unique-id", "operate-on-gie-id", "operate-on-class-ids",
    "classifier-threshold", "classifier-async-mode", "classifier-type", "output-blob-names", "enable-dla",
    "use-dla-core", "maintain-aspect-ratio", "symmetric-padding", "scaling-filter", "scaling-compute-hw",
    "workspace-size", "interval", "input-object-min-width", "input-object-min-height", "input-object-max-width",
    "input-object-max-height", "secondary-reinfer-interval", "output-tensor-meta", "mean-file", "model-file",
    "proto-file", "uff-file", "tlt-encoded-model", "tlt-model-key", "custom-lib-path", "parse-classifier-func-name",
    "num-detected-classes", "cluster-mode", "filter-out-class-ids", "crop-objects-to-roi-boundary",
    "layer-device-precision", "engine-create-func-name", "is-classifier", "force-implicit-batch-dim",
    "uff-input-order", "uff-input-blob-name", "output-io-formats", "disable-output-host-copy",
    "tensor-meta-pool-size", "input-dims", "uff-input-dims", "input-tensor-from-meta", "parse-bbox-func-name",
    "parse-bbox-instance-mask-func-name", "custom-network-config", "enable-dbscan", "segmentation-threshold",
    "segmentation-output-order", "output-instance-mask", "parse-func", "auto-inc-mem", "max-gpu-mem-per",
    "dump-input-tensor", "dump-output-tensor",
})
# integer keys and their allowed values (None: any non-negative integer)
NVINFER_ENUMS: dict[str, tuple[int, ...] | None] = {
    "network-mode": (0, 1, 2),  # 0 FP32, 1 INT8, 2 FP16
    "model-color-format": (0, 1, 2),  # 0 RGB, 1 BGR, 2 GRAY
    "network-type": (0, 1, 2, 3, 100),  # 1 classifier
    "process-mode": (1, 2),  # 1 primary (full frame), 2 secondary (objects)
    "network-input-order": (0, 1),  # 0 NCHW, 1 NHWC
    "maintain-aspect-ratio": (0, 1), "symmetric-padding": (0, 1), "enable-dla": (0, 1),
    "classifier-async-mode": (0, 1), "output-tensor-meta": (0, 1),
    "batch-size": None, "gie-unique-id": None, "gpu-id": None, "use-dla-core": None, "interval": None,
    "operate-on-gie-id": None, "workspace-size": None,
}
# deepstream-app configuration groups edgekit writes, with their keys (DeepStream reference app docs)
APP_KEYS: dict[str, frozenset[str]] = {
    "application": frozenset({"enable-perf-measurement", "perf-measurement-interval-sec", "gie-kitti-output-dir"}),
    "tiled-display": frozenset({"enable", "rows", "columns", "width", "height", "gpu-id", "nvbuf-memory-type"}),
    "source": frozenset({"enable", "type", "uri", "num-sources", "gpu-id", "camera-width", "camera-height",
                         "camera-fps-n", "camera-fps-d", "camera-csi-sensor-id", "camera-v4l2-dev-node",
                         "drop-frame-interval", "nvbuf-memory-type", "latency", "cudadec-memtype"}),
    "streammux": frozenset({"gpu-id", "live-source", "batch-size", "batched-push-timeout", "width", "height",
                            "enable-padding", "nvbuf-memory-type"}),
    "primary-gie": frozenset({"enable", "gpu-id", "batch-size", "gie-unique-id", "config-file", "model-engine-file",
                              "labelfile-path", "interval", "nvbuf-memory-type"}),
    "osd": frozenset({"enable", "gpu-id", "border-width", "text-size", "text-color", "text-bg-color", "font",
                      "show-clock", "display-text", "nvbuf-memory-type"}),
    "sink": frozenset({"enable", "type", "sync", "gpu-id", "nvbuf-memory-type", "source-id", "container", "codec",
                       "bitrate", "output-file"}),
    "tests": frozenset({"file-loop", "pipeline-recreate-sec"}),
}


def ini(groups: list[tuple[str, dict[str, Any]]], header: str) -> str:
    lines = [f"# {h}" for h in header.splitlines()]
    for name, kv in groups:
        lines += ["", f"[{name}]"]
        lines += [f"{k}={v}" for k, v in kv.items()]
    return "\n".join(lines) + "\n"


def parse_ini(text: str) -> list[tuple[str, dict[str, str]]]:
    """GKeyFile-style groups (what DeepStream reads), for validation."""
    groups: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            groups.append((line[1:-1], {}))
            continue
        if "=" not in line or not groups:
            raise UsageError(f"not a key=value line inside a group: {raw!r}")
        k, v = line.split("=", 1)
        if k in groups[-1][1]:
            raise UsageError(f"[{groups[-1][0]}] sets {k} twice")
        groups[-1][1][k] = v
    return groups


def validate_nvinfer(text: str, base: Path) -> None:
    """Keys, enumerated values and referenced files of an nvinfer config, as DeepStream would read them."""
    groups = dict(parse_ini(text))
    if "property" not in groups:
        raise UsageError("an nvinfer config needs a [property] group")
    prop = groups["property"]
    unknown = sorted(set(prop) - NVINFER_KEYS)
    if unknown:
        raise UsageError(f"[property] has keys nvinfer does not know: {', '.join(unknown)}")
    for k, allowed in NVINFER_ENUMS.items():
        if k in prop:
            v = int(prop[k])
            if (allowed is not None and v not in allowed) or v < 0:
                raise UsageError(f"[property] {k}={v} is not one of {allowed}")
    offsets = prop.get("offsets")
    if offsets is not None and len([float(o) for o in offsets.split(";")]) != 3:
        raise UsageError("offsets needs three values separated by ';'")
    dims = [int(d) for d in prop["infer-dims"].split(";")]
    if len(dims) != 3:
        raise UsageError("infer-dims is C;H;W")
    float(prop["net-scale-factor"])
    for key in ("onnx-file", "labelfile-path", "int8-calib-file"):
        if key in prop and not (base / prop[key]).is_file():
            raise UsageError(f"{key}={prop[key]} does not exist beside the config")


def validate_app(text: str) -> None:
    for name, kv in parse_ini(text):
        family = name.rstrip("0123456789")
        if family not in APP_KEYS:
            raise UsageError(f"deepstream-app has no [{name}] group")
        unknown = sorted(set(kv) - APP_KEYS[family])
        if unknown:
            raise UsageError(f"[{name}] has keys deepstream-app does not know: {', '.join(unknown)}")
