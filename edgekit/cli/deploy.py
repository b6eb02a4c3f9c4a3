"""Serving stacks from a bundle: ``edgekit export-deepstream`` and ``edgekit export-triton``."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli.options import _bundle_or_latest, _echo_err


@click.command("export-deepstream")
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
    from edgekit.deploy.deepstream import DeepStreamRequest, export_deepstream

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


@click.command("export-triton")
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
    from edgekit.deploy.triton import TritonRequest, export_triton

    models = export_triton(TritonRequest(_bundle_or_latest(bundle), out, max_batch, instances, kind, precision,
                                         not no_engine, name, force=force), log=_echo_err)
    for m in models:
        click.echo(f"{m.name}\t{m.platform}\t{m.path}")
