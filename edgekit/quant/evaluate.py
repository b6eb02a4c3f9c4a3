"""Accuracy on labelled images (ImageFolder layout) for every precision in a bundle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.errors import UsageError
from edgekit.quant import calibdata, gate


@dataclass(frozen=True)
class Accuracy:
    precision: str
    images: int
    top1: float
    top5: float
    how: str = ""  # what computed it: TensorRT's arithmetic simulated, or ONNX Runtime's kernels here


def class_map(root: Path, labels: list[str], mapping: Path | None) -> dict[str, int]:
    """Folder name -> class index: from a mapping file, the bundle's labels, or numeric names."""
    if not root.is_dir():
        raise UsageError(f"--data {root} is {'not a folder' if root.exists() else 'not there'}; give the folder of "
                         f"labelled images: {root}/<class name>/<image files>")
    if mapping is not None and not mapping.is_file():
        raise UsageError(f"--class-map {mapping} is not a file; give one with a 'folder index' line per class folder")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not folders:
        raise UsageError(f"{root} has no class folders; expected {root}/<class name>/<image files>")
    if mapping is not None:
        table: dict[str, int] = {}
        try:
            text = mapping.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --class-map {mapping} ({getattr(exc, 'strerror', None) or exc}); "
                             "give a UTF-8 text file with a 'folder index' line per class folder") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.replace(",", " ").replace("\t", " ").split()
            if len(parts) < 2 or not parts[-1].isdigit():
                raise UsageError(f"{mapping}: line {n} {line!r} is not 'folder index'")
            table[" ".join(parts[:-1])] = int(parts[-1])
        missing = [f for f in folders if f not in table]
        if missing:
            raise UsageError(f"{mapping} does not map folder(s) {', '.join(missing[:5])}")
        return {f: table[f] for f in folders}
    index = {name: i for i, name in enumerate(labels)}
    out = {}
    for f in folders:
        if f in index:
            out[f] = index[f]
        elif f.isdigit() and int(f) < len(labels):
            out[f] = int(f)
        else:
            raise UsageError(
                f"class folder {f!r} in {root} is neither one of the bundle's labels nor a class index; "
                "rename it or pass --class-map FILE ('folder index' per line)"
            )
    return out


def evaluate(bundle: Path, data: Path, class_map_file: Path | None = None,
             limit: int | None = None) -> list[Accuracy]:
    man = mf.read(bundle)
    labels = bundle_mod.read_labels(bundle, man)
    cmap = class_map(Path(data), labels, class_map_file)
    items: list[calibdata.Item] = []
    target: dict[str, int] = {}
    for folder, idx in cmap.items():
        for it in calibdata.discover(Path(data) / folder):
            items.append(it)
            target[it.key] = idx
    items = calibdata.spread(items, Path(data))  # --limit takes every class evenly, not the first folders
    if limit:
        items = items[:limit]
    targets = [target[it.key] for it in items]
    images, keep = [], []
    for i, (_, img, _) in enumerate(calibdata.iter_loaded(items, man.preprocess)):
        if img is not None:
            images.append(img)
            keep.append(targets[i])
    if not images:
        raise UsageError(f"no readable images in {data}")
    x = np.stack(images)
    y = np.asarray(keep)
    batch, static = gate.batching(man)

    from edgekit.quant.simulate import SimRunner
    from edgekit.runners.ort import OrtRunner

    out = []
    for prec in mf.PRECISIONS:
        art = man.artifact("onnx", prec)
        if art is None:
            continue
        path = bundle_mod.artifact_path(bundle, art)
        # the TensorRT form is judged by what TensorRT computes, not by this CPU's integer kernels
        runner: Any = SimRunner(path) if prec == "int8" else OrtRunner(path)
        how = "TensorRT arithmetic, simulated" if prec == "int8" else "ONNX Runtime on this CPU"
        with runner:
            logits = gate.run_all(runner, x, batch, static)
        k = min(5, logits.shape[1])
        top5 = np.argsort(-logits, axis=1)[:, :k]
        out.append(Accuracy(prec, len(y), float(np.mean(top5[:, 0] == y)),
                            float(np.mean([t in row for t, row in zip(y, top5)])), how))
    return out
