"""The edgekit command line: thin commands that parse, call one library function, print.

Errors: an EdgekitError becomes one line on stderr and its exit code, here and only here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from edgekit import __version__
from edgekit.errors import EdgekitError, UsageError

F = TypeVar("F", bound=Callable[..., Any])


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def _triple(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(x) for x in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise click.BadParameter(f"expected three comma-separated numbers (R,G,B), got {value!r}")
    return parts  # type: ignore[return-value]


# ---------------------------------------------------------------- shared options

def model_option(required: bool = True) -> Callable[[F], F]:
    return click.option("--model", "-m", "model", required=required, metavar="NAME",
                        help="Zoo model name (edgekit models lists them).")


def weights_option(f: F) -> F:
    return click.option(
        "--weights", "-w", default="imagenet", show_default=True, metavar="SOURCE",
        help="imagenet (downloaded, cached), random (for trials), or PATH to a "
             ".pth/.pt/.safetensors checkpoint.",
    )(f)


def out_option(f: F) -> F:
    return click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
                        help="Bundle directory [default: build/<model>-<precision>/].")(f)


def force_option(f: F) -> F:
    return click.option("--force", is_flag=True, help="Replace an existing bundle.")(f)


def export_options(f: F) -> F:
    for opt in reversed([
        click.option("--labels", type=click.Path(path_type=Path), default=None,
                     help="Class names, one per line, in class-index order [default: ImageNet's]."),
        click.option("--input-size", type=int, default=None,
                     help="Input resolution for models fine-tuned at another size."),
        click.option("--batch", type=int, default=None,
                     help="Static batch size [default: dynamic batch]."),
        click.option("--float-input", is_flag=True,
                     help="Float NCHW input (pixels 0..255, model colour order) for DeepStream, "
                          "Triton or OpenCV, instead of the camera's uint8 BGR NHWC."),
        click.option("--mean", callback=_triple, default=None, metavar="R,G,B",
                     help="Normalisation mean, overriding the weights' own."),
        click.option("--std", callback=_triple, default=None, metavar="R,G,B",
                     help="Normalisation std, overriding the weights' own."),
    ]):
        f = opt(f)
    return f


# ---------------------------------------------------------------- commands

@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """Inception classifiers from PyTorch through ONNX to TensorRT, for Jetson and desktop GPUs.

    \b
    Example:
      edgekit export --model inception_v4 -o build/inception_v4
      edgekit classify build/inception_v4 photo.jpg
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json: bool) -> None:
    """List the model zoo.

    \b
    Example:
      edgekit models
    """
    from edgekit.zoo import list_models

    specs = list_models()
    if as_json:
        click.echo(json.dumps([{
            "name": s.name, "version": s.version, "input_size": s.input_size,
            "params_m": s.params_m, "weights": [w.name for w in s.weights] + ["random", "PATH"],
            "definition": s.definition,
        } for s in specs], indent=2))
        return
    rows = [("name", "version", "input", "params", "weights", "definition")]
    for s in specs:
        sources = ", ".join([f"{w.name} ({w.provider})" for w in s.weights] + ["random", "PATH"])
        rows.append((s.name, s.version, f"{s.input_size}x{s.input_size}", f"{s.params_m:.1f} M",
                     sources, s.definition))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


@cli.command()
@model_option()
@weights_option
@out_option
@force_option
@export_options
def export(model: str, weights: str, out: Path | None, force: bool, labels: Path | None,
           input_size: int | None, batch: int | None, float_input: bool,
           mean: tuple[float, float, float] | None, std: tuple[float, float, float] | None) -> None:
    """Export a zoo model to a bundle: ONNX with preprocessing in the graph, parity-checked.

    \b
    Examples:
      edgekit export --model inception_v4 -o build/inception_v4
      edgekit export --model googlenet --weights my_finetune.pth --labels labels.txt -o build/parts
      edgekit export --model inception_v3 --weights random --float-input --batch 1
    """
    from edgekit.export import ExportRequest
    from edgekit.export import export as do_export

    res = do_export(ExportRequest(model, out, weights, labels, input_size, batch, float_input, mean, std, force),
                    log=_echo_err)
    par = res.manifest.validation["parity"]
    click.echo(f"{res.bundle}  ({res.manifest.model.name}, parity {par['max_rel_error']:.1e}, "
               f"{res.seconds:.1f} s)")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def inspect(bundle: Path | None, as_json: bool) -> None:
    """Show what a bundle holds and its validation figures (the latest build by default).

    \b
    Example:
      edgekit inspect build/inception_v4
    """
    from edgekit import bundle as bundle_mod
    from edgekit import manifest as mf
    from edgekit.inspect import describe

    path = bundle or bundle_mod.find_latest()
    if as_json:
        click.echo(mf.read(path).to_json(), nl=False)
    else:
        click.echo(describe(path))


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--topk", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image.")
def classify(bundle: Path, images: tuple[Path, ...], topk: int, as_json: bool) -> None:
    """Classify image files with a bundle (the shipped sample photographs when none are given).

    \b
    Example:
      edgekit classify build/inception_v4 cat.jpg dog.png
    """
    from edgekit.classifier import load
    from edgekit.images import read_image, sample_images

    paths = list(images) or sample_images()
    with load(bundle) as clf:
        if not as_json:
            _echo_err(f"backend: {clf.runner.description} ({clf.why})")
        clf.classify(read_image(paths[0]))  # warm-up, not timed
        for p in paths:
            pred = clf.classify(read_image(p), topk)
            if as_json:
                click.echo(json.dumps({"image": str(p), "latency_ms": round(pred.latency_ms, 2),
                                       "top": [{"label": lb, "index": i, "score": round(s, 5)} for lb, i, s
                                               in zip(pred.labels, pred.indices, pred.scores, strict=False)]}))
                continue
            click.echo(f"{p.name}  ({pred.latency_ms:.1f} ms)")
            for lb, s in zip(pred.labels, pred.scores, strict=False):
                click.echo(f"  {s:6.1%}  {lb}")


@cli.command()
@click.option("--model", "-m", default="inception_v3", show_default=True, metavar="NAME")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("build/demo"), show_default=True)
def demo(model: str, out: Path) -> None:
    """The main job end to end: export with ImageNet weights (random if offline), classify photos.

    \b
    Example:
      edgekit demo --model inception_v3
    """
    from edgekit.demo import run_demo

    run_demo(model, out, click.echo, _echo_err)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="edgekit", standalone_mode=False)
    except click.exceptions.Abort:
        _echo_err("interrupted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgekitError as exc:
        _echo_err(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _echo_err("interrupted; nothing was left half-written")
        sys.exit(130)
    sys.exit(0)


__all__ = ["cli", "main", "UsageError"]
