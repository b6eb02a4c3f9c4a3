"""A readable account of a bundle: what it holds, for what input, and how it was validated.

Everything is printed as aligned columns or sentences, never as Python reprs: the manifest's
lists and objects are spelled out (``--json`` gives the raw manifest)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.errors import BundleError, EdgekitError

NONE = "-"  # an empty cell: every cell has text, so every column starts where its header does


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


def table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Left-aligned columns two spaces apart; each column starts where its header does."""
    body = [[_cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in [list(header), *body]) for i in range(len(header))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [list(header), *body]]


def fields(pairs: Sequence[tuple[str, str]], indent: str = "  ") -> list[str]:
    """``name  value`` lines with the values in one column."""
    if not pairs:
        return []
    w = max(len(k) for k, _ in pairs)
    return [f"{indent}{k.ljust(w)}  {_plain(v)}" for k, v in pairs]


def describe(path: Path) -> str:
    man = mf.read(path, check_labels=False)  # a broken labels file is reported below, not fatal here
    m = man.model
    p = man.preprocess
    lines = fields([
        ("bundle", str(path)),
        ("model", f"{m.name} ({m.version}), {m.num_classes} classes, {m.params / 1e6:.2f} M parameters"),
        ("weights", f"{m.weights}" + (f" (sha256 {m.weights_sha256[:12]})" if m.weights_sha256 else "")),
        ("input", f"{man.input.name}: {man.input.dtype} {man.input.layout} {_shape(man.input.shape)}"
                  + (f", {man.input.color_order}" if man.input.color_order else "")),
        ("output", f"{man.output.name}: {man.output.dtype} {_shape(man.output.shape)}"),
        ("preprocess", f"centre crop {p.crop_fraction:g} + {p.interpolation} resize to {p.height}x{p.width} (CPU); "
                       f"in the graph: {p.color_order} order, pixels x{p.input_range / 255:g}, mean {_vec(p.mean)}, "
                       f"std {_vec(p.std)}"),
        ("created", f"{man.created} by edgekit {man.edgekit_version} (schema {man.schema_version})"),
    ], indent="")
    lines += ["", *_artifacts(path, man)]
    if man.engines:
        lines += ["", *_engines(man)]
    lines += ["", *_validation(man)]
    int8 = man.validation.get("int8")
    if isinstance(int8, dict):
        lines += ["", *_calibration(path, man, int8)]
    origin = _origin(man)
    if origin:
        lines += ["", "origin", *origin]
    return "\n".join(lines)


def _artifacts(path: Path, man: mf.Manifest) -> list[str]:
    labels_problem = None
    try:
        bundle_mod.read_labels(path, man)
    except BundleError as exc:
        labels_problem = str(exc).split(": ", 1)[-1]
    rows = []
    for art, state in check_artifacts(path, man):
        if art.path == man.labels and state == "ok" and labels_problem:
            state, labels_problem = labels_problem, None
        rows.append([art.path, art.kind, art.precision or NONE, _size(art.bytes), art.sha256[:12], state])
    out = ["artifacts", *table(["file", "kind", "precision", "size", "sha256", "state"], rows)]
    if labels_problem:
        out += ["", f"labels: {labels_problem}"]
    return out


def _engines(man: mf.Manifest) -> list[str]:
    rows = []
    for e in man.engines:
        b = e.get("batch")
        batch = (f"{b.get('min')}-{b.get('max')}, opt {b.get('opt')}" if isinstance(b, dict) else _plain(b))
        dla = e.get("dla_core")
        rows.append([_plain(e.get("precision")), f"{_plain(e.get('trt_flavour') or 'tensorrt')} "
                     f"{_plain(e.get('trt_version'))}", _plain(e.get("device")),
                     _plain(e.get("compute_capability")), NONE if dla is None else f"DLA {dla}", batch,
                     _plain(e.get("built")), _plain(e.get("path"))])
    return ["engines (each runs only where it was built: that TensorRT, that device)",
            *table(["precision", "TensorRT", "device", "compute", "DLA", "batch", "built", "file"], rows)]


_FORMS = (("tensorrt", "int8 (TensorRT)"), ("cpu", "int8-cpu (ORT/OpenVINO)"), ("dla", "int8 (DLA, cache)"))


def _validation(man: mf.Manifest) -> list[str]:
    v = man.validation
    out = ["validation"]
    par = v.get("parity")
    imp = v.get("import")
    if isinstance(par, dict):
        against = "the imported model" if isinstance(imp, dict) else "PyTorch"
        out.append(
            f"  parity (ONNX Runtime vs {against}): max relative error {_num(par.get('max_rel_error'), '.2e')} "
            f"(limit {_num(par.get('tolerance'), '.0e')}), top-1 equal {_plain(par.get('top1_equal'))}/"
            f"{_plain(par.get('inputs'))} ({_plain(par.get('random_inputs'))} random, "
            f"{_plain(par.get('photographs'))} photographs): {'passed' if par.get('passed') else 'FAILED'}")
    else:
        out.append("  parity: not recorded")
    for key, val in v.items():
        if key not in ("parity", "int8", "fp16", "bf16", "import", "training"):
            out.append(f"  {_plain(key)}: {_plain(val)}")
    raw = v.get("int8")
    int8: dict[str, Any] = raw if isinstance(raw, dict) else {}
    rows = [[name] + _figures(int8[key]) for key, name in _FORMS if isinstance(int8.get(key), dict)]
    if isinstance(v.get("fp16"), dict):
        rows.append(["fp16"] + _figures(v["fp16"]))
    if isinstance(v.get("bf16"), dict):
        rows.append(["bf16 (OpenVINO)"] + _figures(v["bf16"]))
    if rows:
        images = int8.get("validation_images") or next(
            (f.get("images") for f in (int8.get("tensorrt"), v.get("fp16")) if isinstance(f, dict)), "?")
        labelled = "labelled" if int8.get("labelled") else "unlabelled: no accuracy drop without labels"
        header = ["precision", "top-1 agreement", "95% interval", "top-5 overlap", "cosine", "accuracy drop (95%)",
                  "gate"]
        if all(r[5] == NONE for r in rows):  # unlabelled: a column of dashes says nothing the title does not
            header, rows = header[:5] + header[6:], [r[:5] + r[6:] for r in rows]
        out += ["", f"reduced precision vs FP32 ({_plain(images)} validation images, {labelled})",
                *table(header, rows)]
    return out


def _figures(f: dict[str, Any]) -> list[str]:
    """One gate result as cells: agreement, its interval, top-5 overlap, cosine, accuracy drop, verdict."""
    ci = f.get("top1_agreement_95")
    interval = f"{_num(ci[0])}-{_num(ci[1])}" if isinstance(ci, list) and len(ci) == 2 else NONE
    acc = f.get("accuracy")
    drop = NONE
    if isinstance(acc, dict):
        raw = acc.get("drop_95")
        d95: list[Any] = raw if isinstance(raw, list) and raw else [None]
        drop = (f"{_num(acc.get('drop'), '.1f', 100)} pts ({_num(d95[0], '.1f', 100)} to "
                f"{_num(d95[-1], '.1f', 100)})")
    return [_num(f.get("top1_agreement")), interval, _num(f.get("top5_overlap")), _num(f.get("cosine"), ".5f"), drop,
            _plain(f.get("status", "not tested (older edgekit)"))]


def _calibration(path: Path, man: mf.Manifest, c: dict[str, Any]) -> list[str]:
    method = _plain(c.get("method"))
    if c.get("percentile") is not None:
        method += f" (percentile {_plain(c.get('percentile'))})"
    fb = c.get("fallback_layers")
    if not fb:
        fallbacks = "none: every layer quantized"
    else:
        n = f"{len(fb)} layer{'s' if len(fb) != 1 else ''} " if isinstance(fb, list) else ""
        fallbacks = f"{n}kept in FP32: {_plain(fb)}"
    gate = f"top-1 agreement at least {_num(c.get('min_agreement'), '.2f')}"
    if c.get("labelled"):
        gate += f", accuracy drop at most {_num(c.get('max_drop'), '.1f', 100)} points"
    pairs = [("method", method),
             ("images", f"{_plain(c.get('calibration_images'))} for calibration, "
                        f"{_plain(c.get('validation_images'))} for validation"
                        f" ({'labelled' if c.get('labelled') else 'unlabelled'})"),
             ("cache", _cache(path, man)),
             ("fallbacks", fallbacks),
             ("gate", gate)]
    if c.get("judged_by"):
        pairs.append(("judged by", _plain(c.get("judged_by"))))
    here = c.get("cpu_kernels_here")
    if isinstance(here, dict):
        pairs.append(("CPU kernels", f"int8-cpu on {_plain(here.get('cpu'))}: top-1 agreement "
                                     f"{_num(here.get('top1_agreement'))}, cosine {_num(here.get('cosine'), '.5f')}"))
    if c.get("calibration_seconds") is not None:
        pairs.append(("took", f"{_num(c.get('calibration_seconds'), '.1f')} s"))
    return ["calibration (INT8)", *fields(pairs)]


def _cache(path: Path, man: mf.Manifest) -> str:
    """The TensorRT calibration cache and the TensorRT version its header names (TensorRT ignores
    a cache written for another version)."""
    from edgekit.quant import calibcache

    art = next((a for a in man.artifacts if a.path == "calibration.cache"), None)
    if art is None:
        return "none (no implicit INT8, e.g. on a DLA)"
    try:
        cache = calibcache.loads(bundle_mod.artifact_text(path, art), art.path)
    except EdgekitError as exc:
        return f"{art.path}: {str(exc).split(': ', 1)[-1]}"
    return (f"{art.path} for TensorRT {trt_version_text(cache.version)} ({cache.algorithm}, "
            f"{len(cache.scales)} tensors)")


def trt_version_text(number: int) -> str:
    """8601 -> '8.6.1', 101401 -> '10.14.1' (the inverse of calibcache.trt_version_number)."""
    if number >= 100000:
        return f"{number // 10000}.{number // 100 % 100}.{number % 100}"
    return f"{number // 1000}.{number // 100 % 10}.{number % 100}"


def _origin(man: mf.Manifest) -> list[str]:
    out = []
    imp = man.validation.get("import")
    if isinstance(imp, dict):
        how = f"preset {_plain(imp.get('preset'))}" if imp.get("preset") else "flags"
        flags = imp.get("flags")
        given = " ".join(_flag(k, v) for k, v in flags.items()) if isinstance(flags, dict) else ""
        raw = imp.get("input")
        inp: dict[str, Any] = raw if isinstance(raw, dict) else {}
        producer = (f"{_plain(imp.get('producer_name') or 'unknown producer')} "
                    f"{_plain(imp.get('producer_version') or '')}")
        out.append(f"  import: {_plain(imp.get('file'))} ({producer.rstrip()}, opset {_plain(imp.get('opset'))}), "
                   f"{_plain(inp.get('layout', '?'))} input, {how}{': ' + given if given else ''}"
                   f"{'; its Softmax removed (logits out)' if imp.get('softmax_removed') else ''}")
    tr = man.validation.get("training")
    if isinstance(tr, dict):
        imgs: dict[str, Any] = tr["images"] if isinstance(tr.get("images"), dict) else {}
        out.append(f"  training: edgekit train run {_plain(tr.get('run'))}, best epoch {_plain(tr.get('best_epoch'))}, "
                   f"validation accuracy {_num(tr.get('val_accuracy'), '.1%')} ({_plain(imgs.get('train', '?'))} "
                   f"training, {_plain(imgs.get('val', '?'))} validation images), from {_plain(tr.get('weights'))}")
    return out


def _flag(key: Any, value: Any) -> str:
    """An import flag as it is typed: --mean 0.5,0.5,0.5, --input-size 299x299."""
    sep = "x" if key == "input_size" else ","
    text = sep.join(_plain(x) for x in value) if isinstance(value, (list, tuple)) else _plain(value)
    return f"--{_plain(key).replace('_', '-')} {text}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _plain(v: Any) -> str:
    """Any manifest value as text a person reads: lists comma-separated, objects as 'key value'."""
    if v is None:
        return NONE
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_plain(x) for x in v) or "none"
    if isinstance(v, dict):
        return ", ".join(f"{_plain(k)} {_plain(x)}" for k, x in v.items()) or "none"
    return _CONTROL.sub("?", str(v))


def _cell(v: Any) -> str:
    text = _plain(v)
    return text if text.strip() else NONE


def _num(v: Any, fmt: str = ".3f", scale: float = 1.0) -> str:
    return format(v * scale, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "?"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _shape(shape: tuple[int | str, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _vec(v: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{x:g}" for x in v) + ")"
