"""What the commands share: option decorators, one-line stderr, the progress bar, the BUNDLE default,
and the checks build and calibrate make on their flags."""

from __future__ import annotations

import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from edgekit.errors import UsageError

F = TypeVar("F", bound=typing.Callable[..., Any])


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def parse_triple(value: str | None, one_for_all: bool = False) -> tuple[float, float, float] | None:
    """R,G,B (or, with ``one_for_all``, one number for the three channels) from an option's text."""
    if value is None:
        return None
    try:
        parts = tuple(float(x) for x in value.split(","))
    except ValueError:
        parts = ()
    if one_for_all and len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise click.BadParameter(f"expected R,G,B or one number for all three, got {value!r}" if one_for_all
                                 else f"expected three comma-separated numbers (R,G,B), got {value!r}")
    return parts  # type: ignore[return-value]


def _triple(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float, float] | None:
    return parse_triple(value)


# ---------------------------------------------------------------- shared options

def model_option(required: bool = True) -> Callable[[F], F]:
    return click.option("--model", "-m", "model", required=required, metavar="NAME",
                        help="Zoo model name (edgekit models lists them).")


def weights_option(f: F) -> F:
    return click.option(
        "--weights", "-w", default="imagenet", show_default=True, metavar="SOURCE",
        help="imagenet (downloaded once, cached; offline: use random or PATH), random (for trials), or PATH to a "
             ".pth/.pt/.safetensors checkpoint.",
    )(f)


def out_option(f: F) -> F:
    return click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
                        help="Bundle directory [default: build/<model>-<precision>/].")(f)


def force_option(f: F) -> F:
    return click.option("--force", is_flag=True, help="Replace an existing bundle.")(f)


def model_input_options(f: F) -> F:
    """What export needs to know about a model beyond its weights; build --model takes the same."""
    for opt in reversed([
        click.option("--labels", type=click.Path(path_type=Path), default=None,
                     help="Class names, one per line, in class-index order [default: ImageNet's]."),
        click.option("--input-size", type=int, default=None,
                     help="Input resolution for models fine-tuned at another size."),
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


def export_options(f: F) -> F:
    """export's options; build --model has every one of them (tests/cli/test_build_cli.py checks), its
    --batch being the engine's batch range (N|MIN:OPT:MAX) with a dynamic-batch ONNX."""
    f = click.option("--batch", type=int, default=None, help="Static batch size [default: dynamic batch].")(f)
    return model_input_options(f)


class _ProgressBar:
    """images done / total, images/s and ETA on one stderr line (a library callback)."""

    def __init__(self, what: str) -> None:
        import time

        self.what = what
        self.t0 = time.perf_counter()
        self._time = time.perf_counter

    def __call__(self, done: int, total: int) -> None:
        elapsed = max(self._time() - self.t0, 1e-9)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else 0.0
        if not sys.stderr.isatty():  # a log or CI: one line at the end, not a bar redrawn with \r
            if done >= total:
                click.echo(f"{self.what}: {done}/{total} images, {rate:.1f} images/s, {elapsed:.1f} s", err=True)
            return
        width = 24
        filled = int(width * done / max(total, 1))
        line = (f"\r{self.what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                f"{rate:5.1f} images/s  ETA {eta:4.0f} s")
        click.echo(line, err=True, nl=done >= total)


def calibration_options(f: F) -> F:
    for opt in reversed([
        click.option("--method", type=click.Choice(["entropy", "percentile", "minmax"]), default="entropy",
                     show_default=True, help="Calibration method (entropy: TensorRT's EntropyCalibration2)."),
        click.option("--num-images", type=int, default=None,
                     help="Calibration images to use [default: all, up to 500]."),
        click.option("--percentile", type=float, default=99.99, show_default=True,
                     help="For --method percentile."),
        click.option("--val-data", type=click.Path(path_type=Path), default=None,
                     help="Validation images for the gate [default: a held-out share of the calibration data]."),
        click.option("--num-val-images", type=int, default=None,
                     help="Validation images to use [default: all, up to 1000]."),
        click.option("--holdout", type=float, default=0.2, show_default=True,
                     help="Share of the calibration data held out for validation."),
        click.option("--min-agreement", type=float, default=0.99, show_default=True,
                     help="Least top-1 agreement with FP32; the gate fails when the validation images show "
                          "agreement below it (one-sided binomial test at 5%)."),
        click.option("--max-drop", type=float, default=1.0, show_default=True,
                     help="With labelled validation folders: most top-1 accuracy points INT8/FP16 may lose "
                          "against FP32 (paired test on the same images)."),
        click.option("--fallback", type=click.Choice(["none", "auto"]), default="none", show_default=True,
                     help="auto: keep the most quantization-sensitive layers in FP32 until the gate passes."),
        click.option("--max-fallback", type=int, default=10, show_default=True,
                     help="Most layers --fallback auto may keep in FP32."),
        click.option("--cache-trt-version", default="10.3.0", show_default=True,
                     help="TensorRT version written in calibration.cache's header."),
    ]):
        f = opt(f)
    return f


def _one_precision(int8: bool, fp16: bool, fp32: bool) -> str | None:
    given = [name for name, on in (("int8", int8), ("fp16", fp16), ("fp32", fp32)) if on]
    if given == ["int8", "fp16"]:  # trtexec's habit: what edgekit's INT8 engines are already
        _echo_err("note: --int8 --fp16 builds INT8: on TensorRT 8.5 to 10.x edgekit's INT8 engines already let the "
                  "layers outside the quantized regions run FP16; TensorRT 11 and TensorRT-RTX keep the ONNX's types")
        return "int8"
    if len(given) > 1:
        flags = [f"--{g}" for g in given]
        raise UsageError(f"{', '.join(flags[:-1])} and {flags[-1]} given: an engine has one precision; keep one")
    return given[0] if given else None


_CALIBRATION_OPTIONS = ("calib_data", "method", "num_images", "percentile", "val_data", "num_val_images", "holdout",
                        "min_agreement", "max_drop", "fallback", "max_fallback", "cache_trt_version")


def _calibration_asked() -> bool:
    """Whether this command line names a calibration option (then a calibrated bundle is calibrated again)."""
    ctx = click.get_current_context()
    return any(ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
               for name in _CALIBRATION_OPTIONS)


def _calibrated_how(man: Any, precision: str) -> str:
    fig = man.validation.get(precision)
    if not isinstance(fig, dict):
        return "calibrated earlier"
    if precision == "fp16":
        return "gated earlier"
    return f"{fig.get('method', '?')} on {fig.get('calibration_images', '?')} images"


def _device_command(bundle: Path, precision: str | None, **given: Any) -> str:
    """The edgekit build command to run on the device, with the engine options given here."""
    parts = ["edgekit", "build", bundle.name] + ([f"--{precision}"] if precision else [])
    for key, value in given.items():
        if value is None or value is False:
            continue
        parts.append(f"--{key.replace('_', '-')}")
        if value is not True:
            parts.append(str(value))
    return " ".join(parts)


def _no_engine_options(prof: Any, named: str | None, **given: Any) -> None:
    """No TensorRT engine is built for the CPU profile: options that only shape one are refused, not ignored."""
    flags = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None and v is not False]
    if not flags:
        return
    where = (f"--profile {named} is the CPU" if named else
             "no NVIDIA GPU or Jetson was detected here, so the bundle runs on ONNX Runtime")
    dla = "; DLA cores are on Jetson AGX Xavier, Xavier NX, AGX Orin and Orin NX" if "--dla" in flags else ""
    raise UsageError(f"{', '.join(flags)} shape{'s' if len(flags) == 1 else ''} a TensorRT engine, and none is built: "
                     f"{where}{dla}; drop {'it' if len(flags) == 1 else 'them'}, or build ahead of time for a "
                     "device with --profile NAME (edgekit profiles lists them)")


def _bundle_or_latest(bundle: Path | None) -> Path:
    """Every command that takes a BUNDLE may leave it out: the most recently built one under build/, named."""
    if bundle is not None:
        return bundle
    from edgekit import bundle as bundle_mod

    found = bundle_mod.find_latest()
    _echo_err(f"bundle: {found} (the most recently built; name a bundle to choose another)")
    return found


_WARNED: set[str] = set()


def _warn_profiles() -> None:
    """A broken user profile is left out of detection and listing; say so once per command."""
    prof_mod = sys.modules.get("edgekit.profiles")
    if prof_mod is None:
        return
    for line in prof_mod.skipped():
        if line not in _WARNED:
            _WARNED.add(line)
            _echo_err(f"warning: {line}")
