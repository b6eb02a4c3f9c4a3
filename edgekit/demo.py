"""The main job: export a model with real weights where possible and classify real photos."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgekit.errors import WeightsError
from edgekit.export import ExportRequest, export
from edgekit.images import read_image, sample_images

Out = Callable[[str], None]


def run_demo(model: str, out: Path, say: Out, note: Out) -> None:
    random_weights = False
    try:
        export(ExportRequest(model, out, "imagenet", force=True), log=note)
    except WeightsError as exc:
        note(f"{exc}")
        note("")
        note("*" * 78)
        note("* NOTICE: ImageNet weights could not be downloaded; the demo continues with *")
        note("* RANDOM weights. The pipeline is real, but the labels below are MEANINGLESS. *")
        note("*" * 78)
        random_weights = True
        export(ExportRequest(model, out, "random", force=True), log=note)

    from edgekit.classifier import load

    with load(out) as clf:
        say(f"classifying {len(sample_images())} photographs with {out} on {clf.runner.description}")
        clf.classify(read_image(sample_images()[0]))  # warm-up
        for p in sample_images():
            pred = clf.classify(read_image(p), topk=5)
            say(f"{p.name}  {pred.latency_ms:.1f} ms/image")
            for lb, s in zip(pred.labels, pred.scores, strict=False):
                say(f"  {s:6.1%}  {lb}")
    if random_weights:
        say("(random weights: labels are meaningless; run with internet access for ImageNet weights)")
