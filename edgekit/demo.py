"""The main job: export a model with real weights where possible, calibrate INT8 on real
photographs, and classify real photos with FP32 and INT8 side by side."""

from __future__ import annotations

from pathlib import Path

from edgekit.callbacks import Log as Out
from edgekit.errors import WeightsError
from edgekit.export import ExportRequest, export
from edgekit.images import read_image, sample_images


def run_demo(model: str, out: Path, say: Out, note: Out) -> None:
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

    from edgekit.calibrate import CalibrateRequest, calibrate_bundle

    # Random weights have no accuracy to keep: the gate is opened for them (and says so).
    gate = 0.0 if random_weights else 0.99
    if random_weights:
        note("INT8 accuracy gate opened (--min-agreement 0): random weights have no accuracy to keep")
    res = calibrate_bundle(CalibrateRequest(out, None, min_agreement=gate, fallback="auto"), log=note)
    for prec, fig in res.figures.items():
        say(f"{prec:<9} vs FP32 on held-out photographs: top-1 agreement {fig['top1_agreement']:.3f}, "
            f"cosine {fig['cosine']:.4f}")

    from edgekit.classifier import load

    photos = sample_images()
    with load(out, precision="fp32") as fp32, load(out, precision="int8-cpu") as int8:
        say(f"classifying {len(photos)} photographs with {out} on {fp32.runner.description}")
        for clf in (fp32, int8):
            clf.classify(read_image(photos[0]))  # warm-up
        for p in photos:
            img = read_image(p)
            a = fp32.classify(img, topk=5)
            b = int8.classify(img, topk=5)
            say(f"{p.name}   FP32 {a.latency_ms:.1f} ms/image   INT8 {b.latency_ms:.1f} ms/image")
            for (la, sa), (lb, sb) in zip(zip(a.labels, a.scores), zip(b.labels, b.scores)):
                say(f"  {sa:6.1%}  {la:<28.28} | {sb:6.1%}  {lb}")
        # ... and a stream: a clip made from the same photographs, read live at its own pace
        clip = out / "demo-clip.avi"
        _slideshow(photos, clip)
        from edgekit.sinks import Stats
        from edgekit.streaming import Stream, StreamOptions

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
    if random_weights:
        say("(random weights: labels are meaningless; run with internet access for ImageNet weights)")


def _slideshow(photos: list[Path], path: Path, fps: int = 30, seconds_each: float = 1.5) -> None:
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
