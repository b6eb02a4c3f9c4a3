"""``edgekit import``: a float-input ONNX classifier made elsewhere, wrapped into a bundle.

Registered on the main group in edgekit/cli.py (``cli.add_command(import_cmd)``).
"""

from __future__ import annotations

import re
from pathlib import Path

import click

# the preset names and what they mean, for --help (edgekit.importer.PRESETS holds the values)
_PRESETS = {
    "keras-inception": "NHWC, RGB, x/127.5-1 (Keras inception_v3.preprocess_input)",
    "torch-imagenet": "NCHW, RGB, ImageNet mean/std on [0,1]",
    "caffe": "NCHW, BGR, mean 104,117,123 on 0..255, std 1",
}


def _values(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float, float] | None:
    """R,G,B or one number for all three."""
    from edgekit.cli import parse_triple  # here, not at the top: edgekit.cli imports this module

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
    from edgekit.cli import _echo_err
    from edgekit.importer import ImportRequest, import_model

    res = import_model(ImportRequest(
        model, out, labels, preset, layout, color, mean, std, float(scale) if scale else None, input_size,
        crop_fraction, interpolation, name, force), log=_echo_err)
    par = res.manifest.validation["parity"]
    click.echo(f"{res.bundle}  ({res.manifest.model.name}, {res.manifest.model.num_classes} classes, "
               f"parity {par['max_rel_error']:.1e}, {res.seconds:.1f} s)")
