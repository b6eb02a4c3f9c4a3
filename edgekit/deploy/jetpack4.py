"""What a JetPack 4 board can use (base tier, with onnx): Nano, TX2, and Xaviers still on 4.6.

JetPack 4.6 ships TensorRT 8.0/8.2 and Python 3.6. edgekit's Python runtime needs Python 3.8
(JetPack 5), and TensorRT before 8.5 takes no uint8 network input (NVIDIA/TensorRT #1503), so
a bundle's own ONNX fails to build there. For such a profile ``edgekit build`` writes a kit the
board can use without edgekit: a float-input ONNX (NCHW, pixels 0..255 in the model's colour
order, normalisation still in the graph, probabilities out), the exact ``trtexec`` command for
the precision and the profile's batch and workspace, and how to run the plan (DeepStream 6.0's
nvinfer, or C++).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.deps import require
from edgekit.errors import UsageError

TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
# TensorRT 8.0/8.2's ONNX parser was built against ONNX 1.8: opset 13, IR version 7 at most.
KIT_OPSET, KIT_IR = 13, 7
# ops whose newer versions (up to opset 17) only widened their types: the same for float tensors
_TYPES_ONLY_SINCE_13 = {"Add", "Sub", "Mul", "Div", "Relu"}


@dataclass(frozen=True)
class Kit:
    out: Path
    files: tuple[str, ...]
    command: str


def trtexec_command(onnx_name: str, plan_name: str, precision: str, batch: tuple[int, int, int],
                    shape: tuple[int, int, int], workspace_mib: int) -> str:
    """trtexec as TensorRT 8.0/8.2 spells it (``--workspace``; ``--memPoolSize`` came with 8.4)."""
    c, h, w = shape
    lo, opt, hi = batch
    args = [TRTEXEC, f"--onnx={onnx_name}", f"--saveEngine={plan_name}",
            f"--minShapes=input:{lo}x{c}x{h}x{w}", f"--optShapes=input:{opt}x{c}x{h}x{w}",
            f"--maxShapes=input:{hi}x{c}x{h}x{w}", f"--workspace={workspace_mib}"]
    if precision == "fp16":
        args.append("--fp16")
    elif precision == "int8":
        args += ["--int8", "--fp16"]  # explicit Q/DQ in the ONNX; layers outside it may run FP16
    return " ".join(shlex.quote(a) for a in args)


def for_tensorrt_8_2(model: Any) -> list[str]:
    """Lower ``model`` to opset 13 and IR version 7 in place, where every op means the same there;
    returns the ops that do not (then the model is left as it was)."""
    from onnx import defs

    have = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=KIT_OPSET)
    if have <= KIT_OPSET:
        model.ir_version = min(model.ir_version, KIT_IR)
        return []
    def same(op: str) -> bool:
        try:
            return defs.get_schema(op, KIT_OPSET).since_version == defs.get_schema(op, have).since_version
        except defs.SchemaError:  # no such op in opset 13 (LayerNormalization, GridSample ...)
            return False

    differ = sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")
                     and n.op_type not in _TYPES_ONLY_SINCE_13 and not same(n.op_type)})
    if differ:
        return differ
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = KIT_OPSET
    model.ir_version = min(model.ir_version, KIT_IR)
    return []


def write_kit(bundle: Path, profile: Any, precision: str, batch: Any, workspace_mib: int | None,
              out: Path | None = None, force: bool = False) -> Kit:
    """The kit for ``profile`` (a JetPack 4 board) beside the bundle: ``<bundle>-<profile>/``."""
    onnx = require("onnx", "rewriting ONNX for JetPack 4")
    from edgekit.deploy.deepstream import PROBS, float_front, onnx_file_name
    from edgekit.quant.qdq import float_weights

    man = mf.read(bundle)
    onnx_prec = "int8" if precision == "int8" else "fp32"
    art = man.artifact("onnx", onnx_prec)
    if art is None:
        raise UsageError(f"{bundle} has no {onnx_prec} ONNX model; run edgekit calibrate {bundle} first")
    model = onnx.load(str(bundle_mod.artifact_path(bundle, art)))
    if man.input.dtype == "uint8":
        model, _ = float_front(model, drop_normalisation=False)
    if onnx_prec == "int8":
        float_weights(model)  # TensorRT 8.x's parser takes no int8 weight initializers
    newer = for_tensorrt_8_2(model)
    onnx.checker.check_model(model)
    out = out or bundle_mod.child(bundle.parent, f"{bundle.name}-{profile.name}", "kit directory name")
    pre = man.preprocess
    trts = ", ".join(sorted({s.tensorrt for s in profile.software})) or "8.x"
    # named by what the graph is (as export-deepstream names it): trtexec's flags, not the file, set the precision
    name = onnx_file_name(man.model.name, qdq=onnx_prec == "int8")
    plan = f"{man.model.name}-{profile.name}-{precision}.plan"
    cmd = trtexec_command(name, plan, precision, (batch.min, batch.opt, batch.max), (3, pre.height, pre.width),
                          workspace_mib or profile.workspace_mib)
    opset_note = (f"It is ONNX opset {KIT_OPSET} (IR version {KIT_IR}), what TensorRT 8.0/8.2's parser reads."
                  if not newer else f"Its opset stays above {KIT_OPSET}: {', '.join(newer)} "
                  f"mean something else in opset {KIT_OPSET}; if TensorRT 8.2's parser refuses them, re-export "
                  "with torch.onnx.export(opset_version=13).")
    readme = f"""{man.model.name} for {profile.name} ({profile.description}), {precision}, written by edgekit.

This board runs JetPack 4 (TensorRT {trts}, Python 3.6). edgekit's Python runtime needs JetPack 5
(Python 3.8, TensorRT 8.5); TensorRT before 8.5 takes no uint8 input, so this ONNX takes float
NCHW pixels 0..255 in {pre.color_order} order at {pre.height}x{pre.width} (centre crop
{pre.crop_fraction:g}, then resize), normalisation inside the graph, and outputs probabilities
('{PROBS}') over the {man.model.num_classes} classes in labels.txt. {opset_note}

On the board:
  sh build.sh          # builds {plan} with trtexec (minutes; add swap on a Nano if it is killed)

Then run the plan with DeepStream 6.0 (nvinfer: model-engine-file={plan}, net-scale-factor=1,
offsets=0;0;0, model-color-format={0 if pre.color_order == "RGB" else 1}, network-type=1,
output-blob-names={PROBS}, labelfile-path=labels.txt), or from C++ with TensorRT's runtime.
"""
    labels = "\n".join(bundle_mod.read_labels(bundle, man)) + "\n"
    for file_name in (name, plan):  # names from the manifest and the profile stay plain file names
        bundle_mod.child(out, file_name, "file name")
    with bundle_mod.staging(out, force, mark="build.sh") as tmp:
        onnx.save(model, str(tmp / name))
        (tmp / "labels.txt").write_text(labels, encoding="utf-8")
        (tmp / "build.sh").write_text("#!/bin/sh\nset -e\ncd \"$(dirname \"$0\")\"\n" + cmd + "\n", encoding="utf-8")
        (tmp / "README.txt").write_text(readme, encoding="utf-8")
    return Kit(out, (name, "labels.txt", "build.sh", "README.txt"), cmd)
