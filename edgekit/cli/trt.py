"""Engines and devices: ``edgekit build`` (export and calibrate first when given --model) and
``edgekit profiles`` / ``edgekit profiles show``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from edgekit.cli.options import (
    _bundle_or_latest,
    _calibrated_how,
    _calibration_asked,
    _device_command,
    _echo_err,
    _no_engine_options,
    _one_precision,
    _warn_profiles,
    calibration_options,
    force_option,
    model_input_options,
    model_option,
    out_option,
    weights_option,
)
from edgekit.cli.quant import _calibrate
from edgekit.errors import UsageError


@click.command()
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
    from edgekit.trt.engine import EngineRequest, parse_batch
    from edgekit.trt.engine import build as build_engine

    precision = _one_precision(int8, fp16, fp32)
    for flag, path in (("--calib-data", calib_data), ("--val-data", opts.get("val_data"))):
        if path is not None and not Path(path).exists():
            raise UsageError(f"{flag} {path} does not exist; give a folder of images, a video or an .npy file")
    if bundle is not None and model is not None:
        raise UsageError(f"give either a BUNDLE ({bundle}) or --model {model}, not both (edgekit build --help)")
    if model is None:
        bundle = _bundle_or_latest(bundle)
    from edgekit.export import train_run

    run = bundle if train_run.is_run(bundle or Path("-")) else None
    if run is not None:
        train_run.finished_run(run)  # refuse an unfinished run before any work
    given = [flag for flag, v in (("--labels", labels), ("--input-size", input_size), ("--float-input", float_input),
                                  ("--mean", mean), ("--std", std)) if v is not None and v is not False]
    if bundle is not None and given:
        raise UsageError(f"{', '.join(given)} apply to --model (the export); {bundle} was exported already: "
                         f"drop them, or re-export with edgekit export {' '.join(given)}")
    if bundle is not None and bundle.suffix.lower() == ".onnx":
        from edgekit.trt.engine import build_bare

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
        from edgekit.export.torch_onnx import ExportRequest, reuse_check
        from edgekit.export.torch_onnx import export as do_export
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
        bundle = train_run.bundle_for_run(run, out, force, log=_echo_err)
        split = train_run.run_split(run)
    assert bundle is not None
    man = mf.read(bundle)
    want = precision or (prof.default_precision if prof.kind != "cpu" else None)
    if not prof_mod.edgekit_runs_on(prof):
        if want == "int8" and man.artifact("onnx", "int8") is None:
            _calibrate(bundle, calib_data, split=split, **opts)
        # JetPack 4 (TensorRT 8.0/8.2, Python 3.6): what the board can use without edgekit
        from edgekit.deploy.jetpack4 import write_kit

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
        from edgekit.quant.calibrate import GateError

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


@click.group(invoke_without_command=True)
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
