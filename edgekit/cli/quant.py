"""INT8 calibration and accuracy: ``edgekit calibrate`` (and the calibration step build runs) and
``edgekit eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgekit.cli.options import _bundle_or_latest, _echo_err, _ProgressBar, calibration_options


def _calibrate(bundle: Path, data: Path | None, method: str, num_images: int | None, percentile: float,
               val_data: Path | None, num_val_images: int | None, holdout: float, min_agreement: float,
               max_drop: float, fallback: str, max_fallback: int, cache_trt_version: str, split: Any = None,
               int8: bool = True) -> None:
    from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle

    if data is not None or val_data is not None:
        split = None  # the user's own images win over a training run's split
    req = CalibrateRequest(bundle, data, method, num_images, percentile, val_data, holdout, min_agreement,
                           fallback, max_fallback, cache_trt_version, max_drop=max_drop / 100.0,
                           num_val_images=num_val_images, split=split, int8=int8)
    res = calibrate_bundle(req, log=_echo_err, progress=_ProgressBar("calibrating"))
    n = next(iter(res.figures.values()))["images"]
    click.echo(f"{'precision':<10} {'top-1 agree':>11} {'95% interval':>13} {'top-5 overlap':>13} {'cosine':>8} "
               f"{'acc. drop':>9}  gate  (vs FP32, {n} validation images)")
    for prec, fig in res.figures.items():
        lo, hi = fig["top1_agreement_95"]
        drop = f"{100 * fig['accuracy']['drop']:+.1f} pt" if "accuracy" in fig else "-"
        click.echo(f"{prec:<10} {fig['top1_agreement']:>11.3f} {lo:>6.3f}-{hi:<6.3f} {fig['top5_overlap']:>13.3f} "
                   f"{fig['cosine']:>8.4f} {drop:>9}  {fig['status']}")
    if res.fallback_layers:
        click.echo(f"kept in FP32: {', '.join(res.fallback_layers)}")
    made = "model.int8.onnx, model.int8-cpu.onnx, model.fp16.onnx, calibration.cache" if int8 else "model.fp16.onnx"
    click.echo(f"{bundle}: {made} ({res.seconds:.1f} s)")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Calibration images: folder (recursive), video or .npy [default: edgekit's photographs].")
@calibration_options
def calibrate(bundle: Path | None, data: Path | None, **opts: Any) -> None:
    """INT8 calibration: Q/DQ ONNX for TensorRT and for CPUs, FP16, TensorRT cache, accuracy gate.

    \b
    Example:
      edgekit calibrate build/inception_v4 --data ./images --method entropy --num-images 500
    """
    _calibrate(_bundle_or_latest(bundle), data, **opts)


@click.command(name="eval")
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="Labelled images: DATA/<class>/<images>, folders named as the labels or by index.")
@click.option("--class-map", type=click.Path(path_type=Path), default=None,
              help="File mapping folder names to class indices ('folder index' per line).")
@click.option("--limit", type=int, default=None, help="Use at most this many images.")
def eval_cmd(bundle: Path | None, data: Path, class_map: Path | None, limit: int | None) -> None:
    """Top-1/top-5 accuracy of every precision in a bundle, side by side.

    \b
    Example:
      edgekit eval build/v4-int8 --data ./labelled_val
    """
    from edgekit.quant.evaluate import evaluate

    rows = evaluate(_bundle_or_latest(bundle), data, class_map, limit)
    click.echo(f"{'precision':<10} {'top-1':>7} {'top-5':>7}  ({rows[0].images} images)")
    for r in rows:
        click.echo(f"{r.precision:<10} {r.top1:>7.2%} {r.top5:>7.2%}  {r.how}")
