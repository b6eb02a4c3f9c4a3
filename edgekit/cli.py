"""The edgekit command line: thin commands that parse, call one library function, print.

Errors: an EdgekitError becomes one line on stderr and its exit code, here and only here.
"""

from __future__ import annotations

import json
import os
import sys
import typing
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click

from edgekit.errors import EdgekitError, UsageError
from edgekit.version import __version__

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
    """export's options; build --model has every one of them (tests/test_build_cli.py checks), its
    --batch being the engine's batch range (N|MIN:OPT:MAX) with a dynamic-batch ONNX."""
    f = click.option("--batch", type=int, default=None, help="Static batch size [default: dynamic batch].")(f)
    return model_input_options(f)


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
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


@cli.command()
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
    from edgekit.export import ExportRequest
    from edgekit.export import export as do_export

    if (run is None) == (model is None):
        raise UsageError("give --model NAME, or the folder of an edgekit train run (edgekit export --help)")
    if run is not None:
        from edgekit import manifest as mf
        from edgekit import train as train_mod

        if not train_mod.is_run(run):
            raise UsageError(f"{run} is not an edgekit train run (no {train_mod.RUN_FILE}); for a zoo model give "
                             "--model NAME")
        given = [flag for flag, v in (("--labels", labels), ("--input-size", input_size), ("--mean", mean),
                                      ("--std", std)) if v is not None] + (["--weights"] if weights != "imagenet"
                                                                           else [])
        if given:
            raise UsageError(f"{', '.join(given)} come from the training run {run}; drop them")
        path = train_mod.bundle_for_run(run, out, force, log=_echo_err, batch=batch, float_input=float_input)
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


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def inspect(bundle: Path | None, as_json: bool) -> None:
    """Show what a bundle holds and its validation figures (the latest build by default).

    \b
    Example:
      edgekit inspect build/inception_v4
    """
    from edgekit import manifest as mf
    from edgekit.inspect import describe

    path = _bundle_or_latest(bundle)
    if as_json:
        click.echo(mf.read(path).to_json(), nl=False)
    else:
        click.echo(describe(path))


@cli.command()
@click.argument("args", nargs=-1, type=click.Path(path_type=Path), metavar="[BUNDLE] [IMAGES]...")
@click.option("--topk", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image.")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime", "openvino"]), default="auto",
              show_default=True, help="auto: the bundle's TensorRT engine where it fits this device; without an "
              "NVIDIA GPU the fastest gated CPU path, ONNX Runtime or OpenVINO, measured once (says which and why).")
@click.option("--precision", default="auto", show_default=True, help="auto, fp32, fp16, int8, int8-cpu, bf16 "
              "(OpenVINO on a CPU with AVX512-BF16 or AMX).")
def classify(args: tuple[Path, ...], topk: int, as_json: bool, backend: str, precision: str) -> None:
    """Classify image files with a bundle (the shipped sample photographs when none are given).

    BUNDLE is a directory holding manifest.json; when the first argument is not one, every argument
    is an image (a folder: its images) and the most recently built bundle classifies them.

    \b
    Examples:
      edgekit classify build/inception_v4 cat.jpg dog.png
      edgekit classify cat.jpg
    """
    from edgekit import manifest as mf
    from edgekit.classifier import load
    from edgekit.images import IMAGE_SUFFIXES, read_image, sample_images

    for a in args:
        if not a.exists() and not a.is_symlink():
            raise UsageError(f"{a} does not exist; give a bundle directory (or none: the newest), then image files "
                             "or folders of them")
    first_is_bundle = bool(args) and args[0].is_dir() and (args[0] / mf.MANIFEST).exists()
    bundle = _bundle_or_latest(args[0] if first_is_bundle else None)
    images: list[Path] = []
    for a in args[1:] if first_is_bundle else args:  # a folder stands for its images, in name order
        found = sorted(p for p in a.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if a.is_dir() else [a]
        if not found:
            raise UsageError(f"{a} holds no images ({', '.join(IMAGE_SUFFIXES)}) and is not a bundle (no "
                             f"{mf.MANIFEST})")
        images.extend(found)

    paths = list(images) or sample_images()
    with load(bundle, backend=backend, precision=precision, log=_echo_err) as clf:
        if not as_json:
            _echo_err(f"backend: {clf.runner.description} ({clf.why})")
        clf.classify(read_image(paths[0]))  # warm-up, not timed
        for p in paths:
            pred = clf.classify(read_image(p), topk)
            if as_json:
                click.echo(json.dumps({"image": str(p), "latency_ms": round(pred.latency_ms, 2),
                                       "top": [{"label": lb, "index": i, "score": round(s, 5)} for lb, i, s
                                               in zip(pred.labels, pred.indices, pred.scores)]}))
                continue
            click.echo(f"{p.name}  ({pred.latency_ms:.1f} ms)")
            for lb, s in zip(pred.labels, pred.scores):
                click.echo(f"  {s:6.1%}  {lb}")


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


def _calibrate(bundle: Path, data: Path | None, method: str, num_images: int | None, percentile: float,
               val_data: Path | None, num_val_images: int | None, holdout: float, min_agreement: float,
               max_drop: float, fallback: str, max_fallback: int, cache_trt_version: str, split: Any = None,
               int8: bool = True) -> None:
    from edgekit.calibrate import CalibrateRequest, calibrate_bundle

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


@cli.command()
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


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@model_option(required=False)
@weights_option
@out_option
@force_option
@click.option("--int8", is_flag=True, help="INT8 engine (calibrates first if needed; layers left in float may "
              "run FP16).")
@click.option("--fp16", is_flag=True, help="FP16 engine.")
@click.option("--fp32", is_flag=True, help="FP32 engine.")
@click.option("--profile", "profile", default=None, metavar="NAME|PATH",
              help="Device profile [default: detect this machine] (edgekit profiles lists them).")
@click.option("--dla", type=int, default=None, metavar="CORE", help="Build for a DLA core, with GPU fallback.")
@click.option("--batch", "batch_text", default=None, metavar="N|MIN:OPT:MAX",
              help="Optimisation profile for the batch dimension [default: the profile's].")
@click.option("--workspace", type=int, default=None, metavar="MIB", help="Builder workspace limit.")
@click.option("--opt-level", type=click.IntRange(0, 5), default=None, help="Builder optimisation level.")
@click.option("--version-compatible", is_flag=True, help="Engine loadable by later TensorRT versions (8.6+).")
@click.option("--hardware-compatible", is_flag=True, help="Engine for any Ampere+ desktop GPU (not Jetson).")
@click.option("--rebuild", is_flag=True, help="Rebuild even when a matching engine is cached.")
@click.option("--calib-data", type=click.Path(path_type=Path), default=None,
              help="Calibration images [default: edgekit's general-purpose photographs].")
@model_input_options
@calibration_options
def build(bundle: Path | None, model: str | None, weights: str, out: Path | None, force: bool,
          int8: bool, fp16: bool, fp32: bool, profile: str | None, dla: int | None, batch_text: str | None,
          workspace: int | None, opt_level: int | None, version_compatible: bool, hardware_compatible: bool,
          rebuild: bool, calib_data: Path | None, labels: Path | None, input_size: int | None, float_input: bool,
          mean: tuple[float, float, float] | None, std: tuple[float, float, float] | None, **opts: Any) -> None:
    """Build a TensorRT engine for this device (or --profile) from a bundle or a zoo model.

    With --model, export (and for INT8, calibration) run first, taking every option of edgekit
    export (--labels, --input-size, --mean, --std, --float-input); the ONNX then has a dynamic
    batch and --batch sets the engine's range. On a Jetson, a bundle made on a desktop builds
    without torch installed.

    \b
    Examples:
      edgekit build --model inception_v4 --int8 --calib-data ./images
      edgekit build --model googlenet --weights my_finetune.pth --labels labels.txt --fp16
      edgekit build build/v4-int8 --profile jetson-agx-orin --dla 0
      edgekit build build/v4-int8 --fp16 --batch 1:4:8
    """
    from edgekit import bundle as bundle_mod
    from edgekit import manifest as mf
    from edgekit import profiles as prof_mod
    from edgekit.engine import EngineRequest, parse_batch
    from edgekit.engine import build as build_engine

    precision = _one_precision(int8, fp16, fp32)
    for flag, path in (("--calib-data", calib_data), ("--val-data", opts.get("val_data"))):
        if path is not None and not Path(path).exists():
            raise UsageError(f"{flag} {path} does not exist; give a folder of images, a video or an .npy file")
    if bundle is not None and model is not None:
        raise UsageError(f"give either a BUNDLE ({bundle}) or --model {model}, not both (edgekit build --help)")
    if model is None:
        bundle = _bundle_or_latest(bundle)
    from edgekit import train as train_mod

    run = bundle if train_mod.is_run(bundle or Path("-")) else None
    if run is not None:
        train_mod.finished_run(run)  # refuse an unfinished run before any work
    given = [flag for flag, v in (("--labels", labels), ("--input-size", input_size), ("--float-input", float_input),
                                  ("--mean", mean), ("--std", std)) if v is not None and v is not False]
    if bundle is not None and given:
        raise UsageError(f"{', '.join(given)} apply to --model (the export); {bundle} was exported already: "
                         f"drop them, or re-export with edgekit export {' '.join(given)}")
    if bundle is not None and bundle.suffix.lower() == ".onnx":
        from edgekit.engine import build_bare

        res = build_bare(bundle, precision, profile, parse_batch(batch_text) if batch_text else None, workspace,
                         out, log=_echo_err)
        click.echo(f"{res.path}  ({res.entry['precision']}, {res.entry['trt_flavour']} {res.entry['trt_version']}, "
                   f"{res.entry['device']}; metadata in {res.path.name}.json)")
        return
    # refuse what the device cannot honour before any work
    prof = prof_mod.get(profile) if profile else prof_mod.detect()[0]
    _warn_profiles()
    batch = parse_batch(batch_text) if batch_text else None
    if prof.kind != "cpu":
        prof_mod.check_request(prof, precision or prof.default_precision, dla, batch, workspace)
    else:
        _no_engine_options(prof, profile, dla=dla, batch=batch_text, workspace=workspace, opt_level=opt_level,
                           version_compatible=version_compatible, hardware_compatible=hardware_compatible,
                           rebuild=rebuild)
    exported = False
    if model is not None:
        from edgekit.export import ExportRequest, reuse_check
        from edgekit.export import export as do_export
        from edgekit.zoo import get_spec

        req = ExportRequest(get_spec(model).name, None, weights, labels, input_size, None, float_input, mean, std,
                            force)
        target = out or bundle_mod.default_dir(req.model, precision or "fp32")
        why_not = reuse_check(req, target) if target.exists() and not force else "-"
        if why_not is None:
            _echo_err(f"{target}: going on from the bundle exported earlier with the same model, weights and options "
                      "(--force exports again)")
            bundle = target
        elif target.exists() and not force:
            if not bundle_mod.replaceable(target):
                raise UsageError(f"{target} already exists and holds files that are not a bundle (no manifest.json); "
                                 "choose another -o")
            raise UsageError(f"{target} already exists and is another export ({why_not}); pass --force to replace "
                             "it, or choose another -o")
        else:
            bundle = do_export(replace(req, out=target), log=_echo_err).bundle
            exported = True
    split = None
    if run is not None:
        bundle = train_mod.bundle_for_run(run, out, force, log=_echo_err)
        split = train_mod.run_split(run)
    assert bundle is not None
    man = mf.read(bundle)
    want = precision or (prof.default_precision if prof.kind != "cpu" else None)
    if not prof_mod.edgekit_runs_on(prof):
        if want == "int8" and man.artifact("onnx", "int8") is None:
            _calibrate(bundle, calib_data, split=split, **opts)
        # JetPack 4 (TensorRT 8.0/8.2, Python 3.6): what the board can use without edgekit
        from edgekit.jetpack4 import write_kit

        kit = write_kit(bundle, prof, want or "fp16", batch or prof.batch, workspace, out=None, force=force)
        trts = ", ".join(sw.tensorrt for sw in prof.software)
        _echo_err(f"{prof.name} runs JetPack 4 (TensorRT {trts}, Python 3.6) and edgekit's runtime needs JetPack 5: "
                  "on the board run build.sh (trtexec), then DeepStream 6.0 or C++ (README.txt)")
        click.echo(str(kit.out))
        return
    recalibrate = want in ("int8", "fp16") and man.artifact("onnx", want) is not None and _calibration_asked()
    if want in ("int8", "fp16") and man.artifact("onnx", want) is not None and not recalibrate:
        _echo_err(f"{bundle} holds {want.upper()} already ({_calibrated_how(man, want)}): building from it; "
                  "--calib-data or another calibration option calibrates again")
    elif want in ("int8", "fp16"):
        from edgekit.calibrate import GateError

        try:
            _calibrate(bundle, calib_data, split=split, int8=want == "int8", **opts)
        except (GateError, UsageError) as exc:  # the export is sound: the same command goes on from it
            if model is None:
                raise
            when = "just exported" if exported else "exported earlier"
            kept = type(exc)(f"{str(exc).rstrip('.')}. The FP32 bundle {bundle} ({when}, parity checked) is kept: "
                             "this command run again goes on from it without exporting")
            raise kept from None
    if prof.kind == "cpu" and profile is None:
        _echo_err("no NVIDIA GPU or Jetson detected: no TensorRT engine built; the bundle runs on ONNX Runtime "
                  "(edgekit build BUNDLE on the device, or --profile NAME to build ahead of time with TensorRT-RTX)")
        click.echo(str(bundle))
        return
    from edgekit.deps import available

    if not (available("tensorrt") or (available("tensorrt_rtx") and prof.tensorrt_rtx)):
        if profile is None:  # this machine is the device: its TensorRT is missing, not elsewhere
            from edgekit.errors import MissingDependencyError

            how = ("JetPack installs TensorRT's Python bindings (sudo apt install python3-libnvinfer), and a venv "
                   "sees them only when made with --system-site-packages (python3 -m venv --system-site-packages "
                   ".venv)" if prof.kind == "jetson" else
                   "install NVIDIA's wheels (pip install tensorrt) or TensorRT from NVIDIA's installers")
            raise MissingDependencyError(f"this {prof.name} has no TensorRT that Python can import: {how}; the bundle "
                                         f"{bundle} is ready and runs on ONNX Runtime meanwhile")
        what = ("TensorRT is not installed here" if not available("tensorrt_rtx")
                else f"TensorRT-RTX (the only TensorRT here) cannot build for {prof.name}")
        cmd = _device_command(bundle, want, dla=dla, batch=batch_text, workspace=workspace, opt_level=opt_level,
                              version_compatible=version_compatible, hardware_compatible=hardware_compatible)
        _echo_err(f"{what}: no engine built; copy the bundle to the {prof.name} and run there: {cmd}")
        click.echo(str(bundle))
        return
    res = build_engine(EngineRequest(bundle, precision, profile, dla, batch, workspace, opt_level,
                                     version_compatible, hardware_compatible, rebuild), log=_echo_err)
    click.echo(f"{res.path}  ({res.entry['precision']}, {res.entry['trt_flavour']} {res.entry['trt_version']}, "
               f"{res.entry['device']}{', reused' if res.reused else ''})")


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


@cli.group(invoke_without_command=True)
@click.pass_context
def profiles(ctx: click.Context) -> None:
    """The device profiles, and which one this machine matches.

    \b
    Examples:
      edgekit profiles
      edgekit profiles show jetson-orin-nano
    """
    if ctx.invoked_subcommand is not None:
        return
    from edgekit import profiles as prof_mod

    here, dev = prof_mod.detect()
    rows = [("", "name", "kind", "cc", "fast", "DLA", "batch", "description")]
    for p in prof_mod.all_profiles():
        rows.append(("*" if p.name == here.name else "", p.name, p.kind, ",".join(p.compute_capability),
                     ",".join(p.fast_precisions), str(p.dla_cores), f"{p.batch.min}:{p.batch.opt}:{p.batch.max}",
                     p.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    seen = dev.model or dev.gpu_name or "no NVIDIA GPU"
    click.echo(f"\nthis machine: {seen}" + (f", L4T {dev.l4t}" if dev.l4t else "") + f" -> {here.name}")


@profiles.command("show")
@click.argument("name")
def profiles_show(name: str) -> None:
    """Print one profile (a name or a YAML path), with its sources.

    \b
    Example:
      edgekit profiles show jetson-orin-nano
    """
    import yaml

    from edgekit import profiles as prof_mod

    p = prof_mod.get(name)
    click.echo(f"# {p.path}")
    click.echo(yaml.safe_dump(p.raw, sort_keys=False, width=100).rstrip())


@cli.command(name="eval")
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
    from edgekit.evaluate import evaluate

    rows = evaluate(_bundle_or_latest(bundle), data, class_map, limit)
    click.echo(f"{'precision':<10} {'top-1':>7} {'top-5':>7}  ({rows[0].images} images)")
    for r in rows:
        click.echo(f"{r.precision:<10} {r.top1:>7.2%} {r.top5:>7.2%}  {r.how}")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--camera", multiple=True, metavar="N|URI",
              help="0, /dev/video0, v4l2:///dev/video0, csi://0, rtsp://... (repeat for more cameras).")
@click.option("--source", multiple=True, metavar="URI|PATH",
              help="A video file, image folder or glob, or a stream URL (repeat for more; one batched model).")
@click.option("--precision", default="auto", show_default=True, help="auto, fp32, fp16, int8, int8-cpu, bf16 "
              "(OpenVINO on a CPU with AVX512-BF16 or AMX).")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime", "openvino"]), default="auto",
              show_default=True, help="auto: the bundle's TensorRT engine where it fits this device; without an "
              "NVIDIA GPU the fastest gated CPU path, ONNX Runtime or OpenVINO, measured once (says which and why).")
@click.option("--topk", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--threshold", default=0.0, show_default=True, type=float, help="Below it the label is null.")
@click.option("--smooth", default=None, type=click.FloatRange(0, 0.999), help="EWMA weight of the past, e.g. 0.6.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per result on stdout.")
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Annotated video file.")
@click.option("--display", is_flag=True, help="Show an annotated window.")
@click.option("--every-frame", is_flag=True, help="Files: classify every frame in order (offline).")
@click.option("--width", type=int, default=None, help="Camera frame width [default: the device profile's, else 1280].")
@click.option("--height", type=int, default=None, help="Camera frame height [default: the profile's, else 720].")
@click.option("--fps", type=int, default=None, help="Camera frame rate [default: the profile's, else 30].")
@click.option("--sensor-mode", type=int, default=None,
              help="CSI sensor mode of your camera module (IMX219, IMX477 ...) [default: the sensor's own choice].")
@click.option("--max-frames", type=int, default=None, help="Stop after this many results.")
@click.option("--reconnect-attempts", default=5, show_default=True, help="Before giving up on a lost camera.")
@click.option("--serve", default=None, metavar="[HOST:]PORT",
              help="Live view in a browser, /metrics and /healthz while it runs (host default 127.0.0.1; "
                   "0.0.0.0 to reach it from other machines).")
def run(bundle: Path | None, camera: tuple[str, ...], source: tuple[str, ...], precision: str, backend: str, topk: int,
        threshold: float,
        smooth: float | None, as_json: bool, output: Path | None, display: bool, every_frame: bool,
        width: int | None, height: int | None, fps: int | None, sensor_mode: int | None, max_frames: int | None,
        reconnect_attempts: int, serve: str | None) -> None:
    """Classify a live camera, stream, video file or image folder.

    \b
    Examples:
      edgekit run build/v4-int8 --camera 0
      edgekit run build/v4-int8 --camera csi://0 --display
      edgekit run build/v4-int8 --source clip.mp4 --json > preds.jsonl --output annotated.mp4
      edgekit run build/v4-int8 --source rtsp://cam.local/stream --topk 3 --smooth 0.6
      edgekit run build/v4-int8 --camera /dev/video1 --camera csi://0 --source rtsp://cam3/stream --json
      edgekit run build/v4-int8 --camera 0 --serve 0.0.0.0:8080     # then open http://robot:8080
    """
    import signal

    from edgekit import sinks
    from edgekit.classifier import load
    from edgekit.sources import Reconnect
    from edgekit.streaming import SinkThread, Stream, StreamOptions

    given = list(camera) + list(source)
    if not given:
        raise UsageError("give a source: --camera N|URI or --source PATH|URI, once or more (edgekit run --help)")
    if output and len(given) > 1:
        raise UsageError(f"--output writes one source's video and {len(given)} sources were given; drop --output "
                         "or run one source")
    if output and source and Path(source[0]).exists() and os.path.realpath(source[0]) == os.path.realpath(output):
        raise UsageError(f"--output {output} is the source itself; write the annotated video elsewhere")
    host_port = _host_port(serve) if serve is not None else None  # a bad --serve fails before any work
    video = sinks.VideoOutput(output, 0.0) if output else None  # a bad --output fails before the model loads
    bundle = _bundle_or_latest(bundle)
    clf = load(bundle, backend=backend, precision=precision, log=_echo_err)
    _echo_err(f"backend: {clf.runner.description}, {clf.precision} ({clf.why})")
    from edgekit.streaming import camera_settings

    cam_w, cam_h, cam_fps, cam_mode = camera_settings(width, height, fps, sensor_mode)
    opts = StreamOptions(topk, threshold, smooth, every_frame, True, cam_w, cam_h, cam_fps, cam_mode,
                         Reconnect(attempts=reconnect_attempts), max_frames)
    keep = bool(output or display or serve)  # a sink will draw on the frames
    st: Any
    if len(given) == 1:
        st = Stream(given[0], clf, opts, on_event=_echo_err, keep_frames=keep)
    else:
        from edgekit.multistream import MultiStream

        st = MultiStream(given, clf, opts, on_event=_echo_err, keep_frames=keep)
    stats = sinks.Stats()
    per = sinks.PerSource() if len(given) > 1 else None
    out: list[Any] = [stats] + ([per] if per is not None else [])
    if as_json:
        out.append(sinks.JsonLines(sys.stdout, threshold, describe="JSON lines to stdout"))
    else:
        out.append(sinks.TerminalStatus(stats, lambda: st.dropped, lambda t: click.echo(t, err=True, nl=False), per))
    if video:
        video.fps = st.fps or 30.0
        out.append(video)
    if display:
        out.append(sinks.Window())
    if host_port is not None:
        from edgekit.serve import LiveView

        try:
            view = LiveView(host_port[0], host_port[1], model=clf.manifest.model.name,
                            backend=f"{clf.runner.backend} {clf.precision}", sources=st.status)
        except BaseException:
            st.stop()
            raise
        out.append(view)
        loopback = host_port[0] in ("127.0.0.1", "localhost", "::1")
        _echo_err(f"live view: {view.url}" + ("" if loopback else f" (bound to {host_port[0]}: reachable from other "
                                                                   "machines on this network, as you asked)"))
    signals = 0
    writer = SinkThread(out, stop=lambda: signals > 0)  # once signalled, a stalled output does not hold the exit

    def on_signal(signum: int, frame: Any) -> None:
        # The first Ctrl-C/SIGTERM ends the loop after the frame in hand, and every output is
        # finished; a second one gives up on that.
        nonlocal signals
        signals += 1
        if signals > 1:
            raise KeyboardInterrupt
        st.request_stop()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    _echo_err(f"source: {st.name}" if per is None else f"sources: {', '.join(s.name for s in st.sources)} "
              f"(batches of up to {st.max_batch})")
    error: Exception | None = None
    try:
        try:
            for r in st:
                writer.put(r)
        except Exception as exc:  # noqa: BLE001 - reported after the outputs are finished
            error = exc
        finally:
            st.stop()
        try:
            writer.close()  # everything produced is written; every output is closed before it is renamed
        except Exception as exc:  # noqa: BLE001 - the first failure is the one reported
            error = error or exc
    except KeyboardInterrupt:  # a second signal: give up on the outputs, leave no temporary file
        if video is not None:
            try:
                writer.close(timeout=1.0)
            except Exception:  # noqa: BLE001 - giving up anyway
                pass
            if video.describe not in writer.abandoned and video.tmp.exists():
                video.abort()  # its thread is done with it: safe to release and remove
        raise
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    if per is not None:
        for line in per.summary(st.status()):
            _echo_err(line)
    _echo_err(("all sources: " if per is not None else "") + stats.summary(st.dropped, st.reconnects, len(st.skipped),
                                                                          played=st.played))
    if st.skipped:
        _echo_err("unreadable: " + ", ".join(str(p) for p, _ in st.skipped[:5]) +
                  (f" and {len(st.skipped) - 5} more" if len(st.skipped) > 5 else ""))
    if error is None and st.results == 0 and st.skipped:
        error = UsageError(f"no image in {st.name} could be read ({len(st.skipped)} tried); see the reasons above")
    if error is None and per is not None:
        try:
            st.raise_failures()  # a source lost on the way: reported now that the others have ended
        except EdgekitError as exc:
            error = exc
    if error is not None:
        raise error


def _host_port(text: str) -> tuple[str, int]:
    """``--serve`` as (host, port): '8080', ':8080', '0.0.0.0:8080', '[::]:8080' (port 0: any free one)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--serve takes [HOST:]PORT with a port from 0 (any free one) to 65535, e.g. 8080 or "
                         f"0.0.0.0:8080; got {text!r}")
    return host, int(port)


def _int_list(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--batch takes sizes separated by commas, e.g. 1,4,8; got {text!r}") from None
    if not out or min(out) < 1:
        raise UsageError(f"--batch sizes must be positive, got {text!r}")
    return out


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--precision", default=None, help="Only these precisions, comma-separated (default: all in the bundle).")
@click.option("--backend", type=click.Choice(["all", "auto", "onnxruntime", "openvino", "tensorrt"]), default="all",
              show_default=True, help="all: every backend here, and the path auto chooses (the 'auto:' rows), "
              "with its standing against ONNX Runtime and OpenVINO.")
@click.option("--batch", "batch_text", default="1", show_default=True, help="Batch sizes, e.g. 1,4,8.")
@click.option("--compare", type=click.Choice(["torch"]), default=None,
              help="Also time PyTorch eager on the same weights (and FP16/CUDA graphs on a GPU), with ratios.")
@click.option("--weights", default=None, help="With --compare torch: the weights that made the bundle, if not "
              "recorded in it.")
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="CPU threads (default: the profile's).")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(0, 1000))
@click.option("--runs", default=10, show_default=True, type=click.IntRange(1, 100000), help="At least this many.")
@click.option("--seconds", default=2.0, show_default=True, type=click.FloatRange(0, 3600),
              help="And at least this long.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable results on stdout.")
def bench(bundle: Path | None, precision: str | None, backend: str, batch_text: str, compare: str | None,
          weights: str | None, threads: int | None, warmup: int, runs: int, seconds: float, as_json: bool) -> None:
    """Latency percentiles, throughput and memory of a bundle's models on this machine.

    \b
    Examples:
      edgekit bench build/v4-int8
      edgekit bench build/v4-int8 --batch 1,4,8 --json
      edgekit bench build/v4-int8 --compare torch
    """
    from edgekit import bench as bench_mod
    from edgekit import manifest as mf

    bundle = _bundle_or_latest(bundle)
    precisions = [p.strip() for p in precision.split(",")] if precision else None
    rows, notes = bench_mod.bench_bundle(
        bundle, precisions, backend, _int_list(batch_text), threads, compare == "torch", weights,
        bench_mod.Settings(warmup, runs, seconds), log=lambda m: _echo_err(f"  timing {m}"))
    if as_json:
        click.echo(bench_mod.to_json(bundle, rows, notes))
        return
    from edgekit.cpuinfo import detect

    click.echo(f"{bundle} ({mf.read(bundle).model.name}); median of >= {runs} runs and >= {seconds:g} s each")
    click.echo(f"CPU: {detect().describe()}")
    click.echo(bench_mod.table(rows))
    for r in rows:
        if r.note:
            click.echo(f"  {r.backend} {r.precision} b{r.batch}: {r.note}")
    for n in notes:
        click.echo(f"note: {n}")


@cli.command("export-deepstream")
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="Folder to write (atomically).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Default: the profile's (fp16 where no device is detected).")
@click.option("--profile", default=None, help="Device profile (DLA cores, camera size); default: detected.")
@click.option("--dla", type=int, default=None, help="Run on this DLA core (INT8 then uses the calibration cache).")
@click.option("--sources", default=4, show_default=True, type=click.IntRange(1, 64), help="Sources in the sample app.")
@click.option("--batch", type=click.IntRange(1, 256), default=None, help="nvinfer batch (default: --sources).")
@click.option("--source-uri", default=None, help="URI of every sample source (default: DeepStream's sample clip).")
@click.option("--threshold", default=0.0, show_default=True, type=click.FloatRange(0, 1))
@click.option("--trt-version", default=None, metavar="X.Y.Z",
              help="TensorRT of the target DeepStream (INT8 cache header; int8 weights from 10) [default: the "
                   "profile's, when it lists one; --dla --int8 needs it where JetPacks differ].")
@click.option("--force", is_flag=True, help="Replace the output folder.")
def export_deepstream_cmd(bundle: Path | None, out: Path, precision: str | None, profile: str | None, dla: int | None,
                          sources: int, batch: int | None, source_uri: str | None, threshold: float,
                          trt_version: str | None, force: bool) -> None:
    """An nvinfer config, labels and a deepstream-app config with N sources, from a bundle.

    \b
    Example:
      edgekit export-deepstream build/v4-int8 -o ds/
      deepstream-app -c ds/deepstream_app_config.txt
    """
    from edgekit.deepstream import DeepStreamRequest, export_deepstream

    req = DeepStreamRequest(_bundle_or_latest(bundle), out, precision, profile, dla, batch, sources,
                            threshold=threshold, force=force, trt_version=trt_version)
    if source_uri:
        from dataclasses import replace

        req = replace(req, source=source_uri)
    res = export_deepstream(req, log=_echo_err)
    _echo_err(f"note: {res.note}")
    click.echo(f"{res.out}: nvinfer network-mode {res.network_mode}, normalisation in "
               f"{'nvinfer' if res.normalisation == 'nvinfer' else 'the ONNX graph'}; "
               f"run: deepstream-app -c {res.out / 'deepstream_app_config.txt'}")


@cli.command("export-triton")
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="The model repository folder.")
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(1, 1024))
@click.option("--instances", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--kind", type=click.Choice(["auto", "gpu", "cpu"]), default="auto", show_default=True,
              help="Instance kind; auto: CPU for int8-cpu, else GPU.")
@click.option("--precision", default=None, help="Which ONNX model: fp32 (default), fp16, int8, int8-cpu.")
@click.option("--no-engine", is_flag=True, help="Leave out the bundle's TensorRT engines.")
@click.option("--name", default=None, help="Model name prefix (default: the model's name).")
@click.option("--force", is_flag=True, help="Replace models of the same name in the repository.")
def export_triton_cmd(bundle: Path | None, out: Path, max_batch: int, instances: int, kind: str, precision: str | None,
                      no_engine: bool, name: str | None, force: bool) -> None:
    """Triton model repository entries (config.pbtxt, model, labels) from a bundle.

    \b
    Example:
      edgekit export-triton build/v4-int8 -o model_repository/ --max-batch 8 --instances 2
      tritonserver --model-repository model_repository/
    """
    from edgekit.triton import TritonRequest, export_triton

    models = export_triton(TritonRequest(_bundle_or_latest(bundle), out, max_batch, instances, kind, precision,
                                         not no_engine, name, force=force), log=_echo_err)
    for m in models:
        click.echo(f"{m.name}\t{m.platform}\t{m.path}")


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


def _flush_stdout() -> str | None:
    """Flush stdout now, while an error can still be told in one line (a full disk, a closed pipe);
    afterwards stdout points at /dev/null so the interpreter's exit prints no traceback."""
    try:
        sys.stdout.flush()
        return None
    except (OSError, ValueError) as exc:
        import os

        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, sys.stdout.fileno())
            os.close(fd)
        except (OSError, ValueError):
            pass
        return getattr(exc, "strerror", None) or str(exc)


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the same clean-up, the same exit code (130)


def main(argv: list[str] | None = None) -> None:
    import signal
    import threading

    code = 0
    _WARNED.clear()
    here = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _terminated) if here else None  # run and train set their own
    try:
        cli.main(args=argv, prog_name="edgekit", standalone_mode=False)
    except click.exceptions.Abort:  # click's form of Ctrl-C (and of SIGTERM, raised as one)
        _echo_err("interrupted; nothing was left half-written")
        code = 130
    except click.UsageError as exc:  # click's own (a missing option, a bad value): one line like ours
        see = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        _echo_err(f"error: {exc.format_message()}{see}")
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except (EdgekitError, OSError) as exc:
        code = _report(exc)
    except KeyboardInterrupt:
        _echo_err("interrupted; nothing was left half-written")
        code = 130
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    _warn_profiles()
    failed = _flush_stdout()
    if failed and code == 0:
        _echo_err(f"error: cannot write to stdout: {failed}")
        code = 1
    sys.exit(code)


def _report(exc: BaseException) -> int:
    """One line for an error the user can act on, and its exit code (README, "Exit codes");
    EDGEKIT_DEBUG=1 prints the traceback first, for a bug report."""
    if os.environ.get("EDGEKIT_DEBUG"):
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)
    if isinstance(exc, EdgekitError):
        _echo_err(f"error: {exc}")
        return exc.exit_code
    assert isinstance(exc, OSError)  # a file the checks missed: still one line, never a traceback
    where = f"{exc.filename}: " if exc.filename else ""
    _echo_err(f"error: {where}{exc.strerror or exc}")
    gone = isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError))
    return 2 if gone else 1


from edgekit.cli_import import import_cmd  # noqa: E402  (each stage's command lives in its own module)
from edgekit.cli_train import train_cmd  # noqa: E402

cli.add_command(train_cmd)
cli.add_command(import_cmd)

__all__ = ["cli", "main", "UsageError"]
