"""The commands that make a bundle or a training run: ``edgekit export``, ``edgekit train`` (fine-tune a
zoo model on class folders) and ``edgekit import`` (a float-input ONNX classifier made elsewhere)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgekit.cli.options import (
    _echo_err,
    export_options,
    force_option,
    model_option,
    out_option,
    parse_triple,
    weights_option,
)
from edgekit.errors import UsageError

if TYPE_CHECKING:  # the desktop tier is imported inside the commands that run it, never at start
    from edgekit.export.train_run import Progress


@click.command()
@click.argument("run", type=click.Path(path_type=Path), required=False)
@model_option(required=False)
@weights_option
@out_option
@force_option
@export_options
def export(run: Path | None, model: str | None, weights: str, out: Path | None, force: bool, labels: Path | None,
           input_size: int | None, batch: int | None, float_input: bool,
           mean: tuple[float, float, float] | None, std: tuple[float, float, float] | None) -> None:
    """Export a zoo model, or an edgekit train run, to a bundle: ONNX with preprocessing in the graph.

    A run exports its best weights with the preprocessing it was trained with and its labels
    (into RUN/bundle unless -o). Parity with PyTorch is checked either way.

    \b
    Examples:
      edgekit export --model inception_v4 -o build/inception_v4
      edgekit export --model googlenet --weights my_finetune.pth --labels labels.txt -o build/parts
      edgekit export runs/parts -o build/parts
      edgekit export --model inception_v3 --weights random --float-input --batch 1
    """
    from edgekit.export.torch_onnx import ExportRequest
    from edgekit.export.torch_onnx import export as do_export

    if (run is None) == (model is None):
        raise UsageError("give --model NAME, or the folder of an edgekit train run (edgekit export --help)")
    if run is not None:
        from edgekit import manifest as mf
        from edgekit.export import train_run

        if not train_run.is_run(run):
            raise UsageError(f"{run} is not an edgekit train run (no {train_run.RUN_FILE}); for a zoo model give "
                             "--model NAME")
        given = [flag for flag, v in (("--labels", labels), ("--input-size", input_size), ("--mean", mean),
                                      ("--std", std)) if v is not None] + (["--weights"] if weights != "imagenet"
                                                                           else [])
        if given:
            raise UsageError(f"{', '.join(given)} come from the training run {run}; drop them")
        path = train_run.bundle_for_run(run, out, force, log=_echo_err, batch=batch, float_input=float_input)
        man = mf.read(path)
        click.echo(f"{path}  ({man.model.name}, {man.model.num_classes} classes, parity "
                   f"{man.validation['parity']['max_rel_error']:.1e})")
        return
    assert model is not None
    res = do_export(ExportRequest(model, out, weights, labels, input_size, batch, float_input, mean, std, force),
                    log=_echo_err)
    par = res.manifest.validation["parity"]
    click.echo(f"{res.bundle}  ({res.manifest.model.name}, parity {par['max_rel_error']:.1e}, "
               f"{res.seconds:.1f} s)")


# the preset names and what they mean, for --help (edgekit.export.importer.PRESETS holds the values)
_PRESETS = {
    "keras-inception": "NHWC, RGB, x/127.5-1 (Keras inception_v3.preprocess_input)",
    "torch-imagenet": "NCHW, RGB, ImageNet mean/std on [0,1]",
    "caffe": "NCHW, BGR, mean 104,117,123 on 0..255, std 1",
}


def _values(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float, float] | None:
    """R,G,B or one number for all three."""
    return parse_triple(value, one_for_all=True)


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """N or HxW."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", value)
    if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < 1):
        raise click.BadParameter(f"expected N or HxW in pixels (e.g. 299 or 224x320), got {value!r}")
    h = int(m.group(1))
    return h, int(m.group(2) or h)


@click.command("import")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--preset", type=click.Choice(list(_PRESETS)), default=None,
              help="A common convention; flags override its fields. "
                   + "; ".join(f"{k}: {v}" for k, v in _PRESETS.items()) + ".")
@click.option("--layout", type=click.Choice(["nchw", "nhwc"], case_sensitive=False), default=None,
              help="The model input's layout.")
@click.option("--color", type=click.Choice(["rgb", "bgr"], case_sensitive=False), default=None,
              help="The channel order the model was trained on.")
@click.option("--mean", callback=_values, default=None, metavar="C1,C2,C3",
              help="Normalisation mean in the model's channel order (--color rgb: R,G,B; bgr: B,G,R), "
                   "or one number for all three, as the model was trained.")
@click.option("--std", callback=_values, default=None, metavar="C1,C2,C3",
              help="Normalisation std in the model's channel order, or one number for all three.")
@click.option("--scale", type=click.Choice(["1", "255"]), default=None,
              help="The pixel range mean/std apply to: 1 (pixels 0..1) or 255 (0..255) "
                   "[default: 255 if any mean/std value is over 1, else 1].")
@click.option("--input-size", callback=_size, default=None, metavar="N|HxW",
              help="Input size, where the model does not fix it.")
@click.option("--crop-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Centre crop share of the frame's short side [default: 0.875].")
@click.option("--interpolation", type=click.Choice(["nearest", "bilinear", "bicubic", "area"]), default=None,
              help="Resize interpolation [default: bilinear].")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Class names, one per line, in class-index order [default: ImageNet's for 1000 classes].")
@click.option("--name", default=None, help="The bundle's model name [default: from the file name].")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Bundle directory [default: build/<name>-fp32/].")
@click.option("--force", is_flag=True, help="Replace an existing bundle.")
def import_cmd(model: Path, preset: str | None, layout: str | None, color: str | None,
               mean: tuple[float, float, float] | None, std: tuple[float, float, float] | None, scale: str | None,
               input_size: tuple[int, int] | None, crop_fraction: float | None, interpolation: str | None,
               labels: Path | None, name: str | None, out: Path | None, force: bool) -> None:
    """Wrap a float-input ONNX classifier made elsewhere into a bundle (uint8 BGR frames in, logits
    out, parity-checked); calibrate, build and run then work on it as on an exported one.

    \b
    Examples:
      edgekit import model.onnx --preset keras-inception --labels labels.txt -o build/keras_v3
      edgekit import model.onnx --layout nhwc --mean 127.5 --std 127.5 --color rgb --labels labels.txt -o build/keras_v3
      edgekit import resnet.onnx --preset torch-imagenet --input-size 224
    """
    from edgekit.export.importer import ImportRequest, import_model

    res = import_model(ImportRequest(
        model, out, labels, preset, layout, color, mean, std, float(scale) if scale else None, input_size,
        crop_fraction, interpolation, name, force), log=_echo_err)
    par = res.manifest.validation["parity"]
    click.echo(f"{res.bundle}  ({res.manifest.model.name}, {res.manifest.model.num_classes} classes, "
               f"parity {par['max_rel_error']:.1e}, {res.seconds:.1f} s)")


class _TrainBar:
    """epoch, images, loss, accuracy and ETA on one redrawn stderr line; nothing in a log (each
    epoch ends with its own line there)."""

    def __call__(self, p: Progress) -> None:
        if not sys.stderr.isatty():
            return
        width = 20
        filled = int(width * p.done / max(p.total, 1))
        m, s = divmod(int(p.eta_s), 60)
        h, m = divmod(m, 60)
        eta = f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
        click.echo(f"\repoch {p.epoch}/{p.epochs} [{'#' * filled}{'.' * (width - filled)}] {p.done}/{p.total} "
                   f"loss {p.loss:.3f} acc {p.accuracy:5.1%} {p.images_per_s:5.1f} img/s ETA {eta}   ",
                   err=True, nl=False)
        if p.done >= p.total:
            click.echo("\r" + " " * 100 + "\r", err=True, nl=False)


@click.command("train")
@click.option("--model", "-m", default=None, metavar="NAME", help="Zoo model name (edgekit models lists them).")
@click.option("--data", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Labelled images: DIR/<class name>/<images>, one folder per class.")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="The run directory.")
@click.option("--weights", "-w", default="imagenet", show_default=True, metavar="SOURCE",
              help="Start from: imagenet (transfer learning), random, or PATH to a checkpoint.")
@click.option("--val", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Validation images in the same class folders [default: hold out --holdout of --data].")
@click.option("--holdout", default=0.2, show_default=True, type=float,
              help="Share of each class held out for validation (seeded, the same every run).")
@click.option("--epochs", default=None, type=int, help="Epochs to train [default: 15; with --resume the run's own].")
@click.option("--batch", type=int, default=None, help="Images per step [default: sized to the device's memory].")
@click.option("--lr", default=1e-3, show_default=True, type=float,
              help="Learning rate of the new classifier (pretrained layers: a tenth of it).")
@click.option("--input-size", type=int, default=None, help="Training and deployment resolution [default: model's].")
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="Mirror training images left-right (--no-flip for text, digits, handed objects).")
@click.option("--min-crop", default=0.7, show_default=True, type=float,
              help="Smallest training crop, as a share of the deployed crop's side (framing wander).")
@click.option("--jitter", default=0.2, show_default=True, type=float,
              help="Brightness, contrast and saturation change, +- this share (0: none).")
@click.option("--patience", default=5, show_default=True, type=int,
              help="Stop after this many epochs without a better validation accuracy (0: never).")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Image-reading processes [default: the cores left free; 2 at most on a Jetson].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int, help="Split, shuffle and augmentation seed.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last finished epoch.")
@click.option("--force", is_flag=True, help="Train anew in --out, replacing the run there.")
def train_cmd(model: str | None, data: Path | None, out: Path, weights: str, val: Path | None, holdout: float,
              epochs: int | None, batch: int | None, lr: float, input_size: int | None, flip: bool, min_crop: float,
              jitter: float, patience: int, workers: int | None, device: str, seed: int, resume: bool,
              force: bool) -> None:
    """Fine-tune a zoo model on your own classes; the run directory builds like a bundle.

    Training sees exactly what the deployed engine sees: the same crop and resize of the camera
    frame, the same colour order and normalisation (the exported graph's own). The best weights
    by validation accuracy are kept; Ctrl-C or a kill loses at most the epoch in progress.

    \b
    Examples:
      edgekit train --model googlenet --data ./my_objects -o runs/parts
      edgekit train --resume -o runs/parts
      edgekit build runs/parts --int8
      edgekit eval runs/parts/bundle --data ./held_out
    """
    from edgekit.errors import UsageError
    from edgekit.export.train import TrainRequest, train

    if resume and force:
        raise UsageError("--resume continues the run in --out and --force replaces it: give one")
    res = train(TrainRequest(out, model, data, weights, val, holdout, epochs or 0, batch, lr, input_size, flip,
                             min_crop, jitter, patience, workers, seed, device, resume, force),
                log=_echo_err, progress=_TrainBar())
    info = res.info
    rep = info["report"]
    worst = sorted(rep["per_class"], key=lambda r: r["accuracy"])[:5]
    _echo_err("lowest classes: " + ", ".join(f"{r['class']} {r['accuracy']:.0%} ({r['correct']}/{r['images']})"
                                             for r in worst))
    click.echo(f"{res.run}  ({info['model']}, {len(info['classes'])} classes, validation accuracy "
               f"{rep['val_accuracy']:.1%} at epoch {info['best']['epoch']}, {info['seconds']:.0f} s; "
               f"next: edgekit build {res.run} --int8)")
