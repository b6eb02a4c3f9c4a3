"""`edgekit train`: fine-tune a zoo model on class folders (registered in edgekit.cli)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgekit.train import Progress


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
    from edgekit.cli import _echo_err
    from edgekit.errors import UsageError
    from edgekit.train import TrainRequest, train

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
