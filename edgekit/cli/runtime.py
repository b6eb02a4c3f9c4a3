"""Running a bundle: ``edgekit inspect``, ``edgekit classify`` (image files), ``edgekit run`` (cameras,
streams, videos, folders) and ``edgekit bench``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from edgekit.cli.options import _bundle_or_latest, _echo_err
from edgekit.errors import EdgekitError, UsageError


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def inspect(bundle: Path | None, as_json: bool) -> None:
    """Show what a bundle holds and its validation figures (the latest build by default).

    \b
    Example:
      edgekit inspect build/inception_v4
    """
    from edgekit import manifest as mf
    from edgekit.runtime.inspect import describe

    path = _bundle_or_latest(bundle)
    if as_json:
        click.echo(mf.read(path).to_json(), nl=False)
    else:
        click.echo(describe(path))


@click.command()
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
    from edgekit.images import IMAGE_SUFFIXES, read_image, sample_images
    from edgekit.runtime.loader import load

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


@click.command()
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

    from edgekit.runtime import sinks
    from edgekit.runtime.loader import load
    from edgekit.runtime.sink_thread import SinkThread
    from edgekit.runtime.sources import Reconnect
    from edgekit.runtime.streaming import Stream, StreamOptions

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
    from edgekit.runtime.streaming import camera_settings

    cam_w, cam_h, cam_fps, cam_mode = camera_settings(width, height, fps, sensor_mode)
    opts = StreamOptions(topk, threshold, smooth, every_frame, True, cam_w, cam_h, cam_fps, cam_mode,
                         Reconnect(attempts=reconnect_attempts), max_frames)
    keep = bool(output or display or serve)  # a sink will draw on the frames
    st: Any
    if len(given) == 1:
        st = Stream(given[0], clf, opts, on_event=_echo_err, keep_frames=keep)
    else:
        from edgekit.runtime.multistream import MultiStream

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
        from edgekit.runtime.serve import LiveView

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


@click.command()
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
    from edgekit import manifest as mf
    from edgekit.runtime import bench as bench_mod

    bundle = _bundle_or_latest(bundle)
    precisions = [p.strip() for p in precision.split(",")] if precision else None
    peer = None
    if compare == "torch":  # the desktop tier, asked for by name: only here does bench reach torch
        from edgekit.export import torch_peer

        peer = torch_peer.peer(weights)
    rows, notes = bench_mod.bench_bundle(
        bundle, precisions, backend, _int_list(batch_text), threads, peer,
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
