"""``edgekit demo``, the main job: export a model with real weights where possible, calibrate INT8 on
real photographs, and classify real photos with FP32 and INT8 side by side."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from edgekit import manifest as mf
from edgekit.callbacks import Log as Out
from edgekit.cli.options import _echo_err
from edgekit.errors import WeightsError
from edgekit.images import IMAGE_SUFFIXES, read_image, sample_images

CLIP_FPS = 30
CLIP_SECONDS_EACH = 1.5


@click.command()
@click.option("--model", "-m", default="inception_v3", show_default=True, metavar="NAME")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("build/demo"), show_default=True)
def demo(model: str, out: Path) -> None:
    """The main job end to end: export with ImageNet weights (random if offline), classify photos.

    \b
    Example:
      edgekit demo --model inception_v3
    """
    run_demo(model, out, click.echo, _echo_err)


def run_demo(model: str, out: Path, say: Out, note: Out) -> None:
    from edgekit.export.torch_onnx import ExportRequest, export  # the desktop tier: only when the demo runs

    say(f"== 1/4  export {model} from PyTorch to ONNX into the bundle {out}/ (checked against PyTorch)")
    random_weights = False
    try:
        export(ExportRequest(model, out, "imagenet", force=True), log=note)
    except WeightsError as exc:
        note(f"{exc}")
        note("")
        lines = ["NOTICE: ImageNet weights could not be downloaded; the demo continues with",
                 "RANDOM weights. The pipeline is real, but the labels below are MEANINGLESS."]
        width = max(len(x) for x in lines)
        note("*" * (width + 4))
        for x in lines:
            note(f"* {x.ljust(width)} *")
        note("*" * (width + 4))
        random_weights = True
        export(ExportRequest(model, out, "random", force=True), log=note)

    from edgekit.quant import calibdata
    from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle

    general = calibdata.default_set()
    n_photos = sum(1 for p in general.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    say(f"== 2/4  INT8: calibrate on the {n_photos} photographs in {_shown(general)}/, each cut into several "
        "crops (scale, position, mirror); the crops of a few whole photographs are held out to measure how often "
        "INT8 and FP16 give FP32's top-1")
    # Random weights have no accuracy to keep: the gate is opened for them (and says so).
    gate = 0.0 if random_weights else 0.99
    if random_weights:
        note("INT8 accuracy gate opened (--min-agreement 0): random weights have no accuracy to keep")
    res = calibrate_bundle(CalibrateRequest(out, None, min_agreement=gate, fallback="auto"), log=note)
    v = res.manifest.validation.get("int8", {})
    n_cal, n_val = v.get("calibration_images"), v.get("validation_images")
    if isinstance(n_cal, int) and isinstance(n_val, int) and n_photos and (n_cal + n_val) % n_photos == 0:
        crops = (n_cal + n_val) // n_photos
        say(f"        {n_cal} + {n_val} images = {n_photos} photographs x {crops} crops: {n_cal} calibrate, "
            f"{n_val} (the crops of {n_val // crops} photographs calibration never saw) gave the agreement "
            "figures above")

    from edgekit.runtime.loader import load

    man = res.manifest
    fp32_file = _artifact(man, "fp32", "model.onnx")
    cpu_file = _artifact(man, "int8-cpu", "model.int8-cpu.onnx")
    trt_file = _artifact(man, "int8", "model.int8.onnx")
    photos = sample_images()
    with load(out, precision="fp32") as fp32, load(out, precision="int8-cpu") as int8:
        say(f"== 3/4  classify the {len(photos)} sample photographs in {_shown(photos[0].parent)}/ on "
            f"{fp32.runner.description}: top-5 of FP32 ({fp32_file}) | INT8 ({cpu_file}, the CPU form: uint8 "
            f"activations, int8 weights; TensorRT builds its engines from {trt_file} instead)")
        for clf in (fp32, int8):
            clf.classify(read_image(photos[0]))  # warm-up
        for p in photos:
            img = read_image(p)
            a = fp32.classify(img, topk=5)
            b = int8.classify(img, topk=5)
            say(f"{p.name}   FP32 {a.latency_ms:.1f} ms/image   INT8 {b.latency_ms:.1f} ms/image")
            for (la, sa), (lb, sb) in zip(zip(a.labels, a.scores), zip(b.labels, b.scores)):
                say(f"  {sa:6.1%}  {la:<28.28} | {sb:6.1%}  {lb}")
        # ... and a stream: a clip made from the same photographs, read live at its own pace. It is
        # written beside the bundle, never inside it (a bundle holds only what its manifest lists).
        clip = _clip_path(out)
        _slideshow(photos, clip, CLIP_FPS, CLIP_SECONDS_EACH)
        say(f"== 4/4  a stream: {clip} is a {len(photos) * CLIP_SECONDS_EACH:.0f} s video of the same photographs, "
            f"panning, standing in for a camera; read at its own {CLIP_FPS} frames/s, each newest frame classified "
            "with INT8; a line each time the top-1 label changes")
        from edgekit.runtime.counters import Stats
        from edgekit.runtime.streaming import Stream, StreamOptions

        st = Stream(str(clip), int8, StreamOptions(topk=1))
        stats = Stats()
        last = None
        for r in st:
            stats.write(r)
            if r.prediction.label != last:
                say(f"  stream frame {r.frame_index:4d}: {r.prediction.label} ({r.prediction.score:.1%}), "
                    f"{r.latency_ms:.0f} ms capture to result")
                last = r.prediction.label
        say(f"stream {clip.name}: {stats.summary(st.dropped, st.reconnects)}")
    say("")
    if random_weights:
        say("(random weights: labels are meaningless; run with internet access for ImageNet weights)")
    held = ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))
    say(f"the bundle is {out}/ ({held}); edgekit inspect {out} says what it holds")
    hint = _venv_hint()
    if hint:
        say(hint)
    say("next:")
    say(f"  edgekit classify {out} my_photo.jpg   # your own photographs")
    say(f"  edgekit run {out} --camera 0   # a live camera (--source {clip} replays the clip)")
    say("  edgekit build --model inception_v4 --int8 --calib-data ./images   # another model, INT8 calibrated on "
        "your own camera's images (a TensorRT engine too on an NVIDIA GPU or Jetson)")


def _artifact(man: mf.Manifest, precision: str, default: str) -> str:
    art = man.artifact("onnx", precision)
    return art.path if art is not None else default


def _shown(path: Path) -> str:
    """A path as the user would type it here: relative to the working directory when inside it."""
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith("..") else Path(rel).as_posix()


def _clip_path(out: Path) -> Path:
    """build/demo -> build/demo-clip.avi: beside the bundle, not inside it."""
    base = out if out.name else out.resolve()
    return base.with_name(base.name + "-clip.avi")


def _venv_hint() -> str | None:
    """How to reach the edgekit command when it lives in a virtual environment that is not on PATH
    (make installs into .venv and runs .venv/bin/edgekit; a bare `edgekit` then is not found)."""
    if sys.prefix == sys.base_prefix:
        return None
    bindir = Path(sys.prefix) / "bin"
    found = shutil.which("edgekit")
    if found and Path(found).resolve().parent == bindir.resolve():
        return None
    venv = _shown(Path(sys.prefix))
    return (f"edgekit is installed in {venv}, which is not active here: run `. {venv}/bin/activate` "
            f"first (or type {venv}/bin/edgekit)")


def _slideshow(photos: list[Path], path: Path, fps: int = CLIP_FPS, seconds_each: float = CLIP_SECONDS_EACH) -> None:
    """A short video of the photographs, panning slowly, as a stand-in for a camera."""
    import cv2

    w, h = 640, 480
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))  # type: ignore[attr-defined]
    try:
        for p in photos:
            img = cv2.resize(read_image(p), (w + 80, h + 60))
            n = int(fps * seconds_each)
            for i in range(n):
                x = int(80 * i / n)
                writer.write(img[30:30 + h, x:x + w])
    finally:
        writer.release()
