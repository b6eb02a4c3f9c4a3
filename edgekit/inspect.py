"""A readable account of a bundle: what it holds, for what input, and how it was validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.errors import BundleError


def check_artifacts(path: Path, man: mf.Manifest) -> list[tuple[mf.Artifact, str]]:
    """(artifact, "ok" or what is wrong) for every artifact."""
    out = []
    for art in man.artifacts:
        try:
            bundle_mod.artifact_path(path, art)
            out.append((art, "ok"))
        except BundleError as exc:
            out.append((art, str(exc).split(": ", 1)[-1]))
    return out


def describe(path: Path) -> str:
    man = mf.read(path, check_labels=False)  # a broken labels file is reported below, not fatal here
    m = man.model
    p = man.preprocess
    lines = [
        f"bundle      {path}",
        f"model       {m.name} ({m.version}), {m.num_classes} classes, {m.params / 1e6:.2f} M parameters",
        f"weights     {m.weights}" + (f" (sha256 {m.weights_sha256[:12]}…)" if m.weights_sha256 else ""),
        f"input       {man.input.name}: {man.input.dtype} {man.input.layout} "
        f"{_shape(man.input.shape)}" + (f", {man.input.color_order}" if man.input.color_order else ""),
        f"output      {man.output.name}: {man.output.dtype} {_shape(man.output.shape)}",
        f"preprocess  centre crop {p.crop_fraction:g} + {p.interpolation} resize to {p.height}x{p.width} "
        f"(CPU); in the graph: {p.color_order} order, pixels x{p.input_range / 255:g}, "
        f"mean {_vec(p.mean)}, std {_vec(p.std)}",
        f"created     {man.created} by edgekit {man.edgekit_version} (schema {man.schema_version})",
        "artifacts",
    ]
    for art, state in check_artifacts(path, man):
        prec = f" [{art.precision}]" if art.precision else ""
        lines.append(f"  {art.path:<24} {art.kind}{prec:<11} {art.bytes / 1e6:8.2f} MB  "
                     f"sha256 {art.sha256[:12]}…  {state}")
    try:
        bundle_mod.read_labels(path, man)
    except BundleError as exc:
        lines.append(f"  labels: {str(exc).split(': ', 1)[-1]}")
    if man.engines:
        lines.append("engines")
        for e in man.engines:
            lines.append(f"  {e.get('path')}  {e.get('precision')}  TensorRT {e.get('trt_version')}  "
                         f"{e.get('device')}")
    lines.append("validation")
    par: dict[str, Any] | None = man.validation.get("parity")
    imp = man.validation.get("import")
    if par:
        against = "the imported model" if isinstance(imp, dict) else "PyTorch"
        lines.append(
            f"  parity (ONNX Runtime vs {against}): max relative error {par['max_rel_error']:.2e} "
            f"(limit {par['tolerance']:.0e}), top-1 equal {par['top1_equal']}/{par['inputs']} "
            f"({par['random_inputs']} random, {par['photographs']} photographs): "
            f"{'passed' if par['passed'] else 'FAILED'}"
        )
    int8 = man.validation.get("int8")
    if isinstance(int8, dict):
        lines.append(f"  int8: {int8.get('method')} calibration on {int8.get('calibration_images')} images, "
                     f"judged on {int8.get('validation_images')} {'labelled ' if int8.get('labelled') else ''}"
                     f"images; kept in FP32: {_names(int8.get('fallback_layers'))}")
        for form in ("tensorrt", "cpu", "dla"):
            if isinstance(int8.get(form), dict):
                lines.append(f"    {form}: {_figures(int8[form])}")
    if isinstance(man.validation.get("fp16"), dict):
        lines.append(f"  fp16: {_figures(man.validation['fp16'])}")
    if isinstance(imp, dict):
        how = f"preset {imp.get('preset')}" if imp.get("preset") else "flags"
        given = ", ".join(f"{k} {v}" for k, v in (imp.get("flags") or {}).items()) if isinstance(
            imp.get("flags"), dict) else ""
        lines.append(f"  import: {imp.get('file')} ({imp.get('producer_name') or 'unknown producer'} "
                     f"{imp.get('producer_version') or ''}".rstrip() + f", opset {imp.get('opset')}), "
                     f"{(imp.get('input') or {}).get('layout', '?')} input, {how}{': ' + given if given else ''}"
                     f"{'; its Softmax removed (logits out)' if imp.get('softmax_removed') else ''}")
    tr = man.validation.get("training")
    if isinstance(tr, dict):
        acc = tr.get("val_accuracy")
        imgs: dict[str, Any] = tr["images"] if isinstance(tr.get("images"), dict) else {}
        lines.append(f"  training: edgekit train run {tr.get('run')}, best epoch {tr.get('best_epoch')}, validation "
                     f"accuracy {format(acc, '.1%') if isinstance(acc, (int, float)) else '?'} "
                     f"({imgs.get('train', '?')} training, {imgs.get('val', '?')} validation images), from "
                     f"{tr.get('weights')}")
    for key, val in man.validation.items():
        if key not in ("parity", "int8", "fp16", "import", "training"):
            lines.append(f"  {key}: {val}")
    return "\n".join(lines)


def _names(value: Any) -> str:
    return ", ".join(str(v) for v in value) or "none" if isinstance(value, list) else "none" if not value else "?"


def _figures(f: dict[str, Any]) -> str:
    """One gate result: agreement with its interval, labelled accuracy drop, verdict."""
    def num(v: Any, fmt: str = ".3f", scale: float = 1.0) -> str:
        return format(v * scale, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"

    text = f"top-1 agreement {num(f.get('top1_agreement'))}"
    ci = f.get("top1_agreement_95")
    if isinstance(ci, list) and len(ci) == 2:
        text += f" (95% {num(ci[0])}-{num(ci[1])})"
    acc = f.get("accuracy")
    if isinstance(acc, dict):
        raw = acc.get("drop_95")
        d95: list[Any] = raw if isinstance(raw, list) and raw else [None]
        text += (f", accuracy drop {num(acc.get('drop'), '.1f', 100)} points "
                 f"(95% {num(d95[0], '.1f', 100)} to {num(d95[-1], '.1f', 100)})")
    return text + f", cosine {num(f.get('cosine'), '.5f')}: {f.get('status', 'not tested (older edgekit)')}"


def _shape(shape: tuple[int | str, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _vec(v: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{x:g}" for x in v) + ")"
