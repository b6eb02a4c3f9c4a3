"""INT8 on the CPU and the INT8 gate, measured in one run, with the CPU's flags beside the figures.

Part 1, speed (inception_v3 at 299x299, random weights: speed does not depend on the values):
batch-1 latency of PyTorch eager FP32, ONNX Runtime FP32, the CPU form (7-bit weights), an
8-bit-weight CPU form for comparison, and the TensorRT Q/DQ form on ONNX Runtime; ratios to
ONNX Runtime FP32.

Part 2, the gate on a model with real accuracy (the check issue 12 names): a torchvision
GoogLeNet (aux heads off, transform_input=False) fine-tuned here on scikit-learn's digits at
96 px with ImageNet mean/std, saved as a state_dict, exported with ``--input-size 96 --mean
--std --labels`` and built with ``edgekit build BUNDLE --int8 --calib-data DIR`` on 300 images
in one flat folder, every option at its default. Then every model on 497 held-out digits, fed
camera-style uint8 frames: agreement with FP32 / accuracy, through ONNX Runtime with all graph
optimisations (this CPU's fused integer kernels), with optimisations off (Q and DQ as float
operations), and through the simulation of TensorRT's arithmetic that the gate uses.

``--qemu`` adds the same table from an AMD EPYC-Rome (AVX2, no VNNI) emulated by qemu-x86_64,
so ONNX Runtime dispatches its AVX2 kernels (accuracy only: emulated time means nothing).

    .venv/bin/python benchmarks/int8_speed.py [--runs 40] [--train-steps 300] [--qemu]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgekit.cpuinfo import detect  # noqa: E402

TABLE_SCRIPT = r"""
import json, sys, numpy as np
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from edgekit.quant import gate
from edgekit.runners.ort import OrtRunner
from edgekit.quant.simulate import SimRunner
from edgekit.cpuinfo import detect
b, x, y = Path(sys.argv[2]), np.load(sys.argv[3]), np.load(sys.argv[4])
with OrtRunner(b / "model.onnx") as r:
    ref = gate.run_all(r, x)
rows = {"cpu": detect().describe(), "fp32": float(np.mean(ref.argmax(1) == y)), "models": {}}
for name in ("model.int8.onnx", "model.int8-cpu.onnx"):
    row = {}
    for how in sys.argv[5].split(","):
        runner = SimRunner(b / name) if how == "simulated" else OrtRunner(b / name, optimize=(how == "all"))
        with runner:
            out = gate.run_all(runner, x)
        row[how] = [float(np.mean(out.argmax(1) == ref.argmax(1))), float(np.mean(out.argmax(1) == y))]
    rows["models"][name] = row
print(json.dumps(rows))
"""


def latency_ms(fn, runs: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def speed(work: Path, runs: int, threads: int) -> dict[str, float]:
    import onnx
    import torch

    from edgekit import manifest as mf
    from edgekit.export.torch_onnx import ExportRequest, export
    from edgekit.preprocess import to_model_input
    from edgekit.quant import calibdata, cpu_qdq, quantize
    from edgekit.runners.ort import OrtRunner
    from edgekit.zoo import get_spec

    b = export(ExportRequest("inception_v3", work / "v3", weights="random", parity_random=2)).bundle
    man = mf.read(b)
    items = calibdata.discover(calibdata.default_set(), variants=42)[:500]
    imgs = calibdata.collect(calibdata.spread(items, calibdata.default_set()), man.preprocess).images
    t0 = time.perf_counter()
    cal = quantize.calibrate(b / "model.onnx", imgs, "entropy")
    calib_s = time.perf_counter() - t0
    quantize.quantize(b / "model.onnx", cal, work / "trt.onnx", "trt")
    quantize.quantize(b / "model.onnx", cal, work / "cpu7.onnx", "cpu")
    m = onnx.load(str(b / "model.onnx"))
    cpu8, _ = cpu_qdq.cpu_qdq(m, cal.ranges, preprocessing=quantize.activations.preprocessing_nodes(m), weight_qmax=127)
    onnx.save(cpu8, str(work / "cpu8.onnx"))
    x1 = imgs[:1]
    model = get_spec("inception_v3").builder(1000, 299).eval()
    xt = torch.from_numpy(to_model_input(x1, man.preprocess))
    out = {"calibration_500_s": calib_s}
    with torch.no_grad():
        out["torch"] = latency_ms(lambda: model(xt), runs)
    for key, path in (("fp32", b / "model.onnx"), ("cpu7", work / "cpu7.onnx"), ("cpu8", work / "cpu8.onnx"),
                      ("trt_form", work / "trt.onnx")):
        with OrtRunner(path, threads=threads) as r:
            out[key] = latency_ms(lambda r=r: r.infer(x1), runs)
    return out


def train_googlenet(x: np.ndarray, y: np.ndarray, steps: int):
    """torchvision's GoogLeNet, as someone fine-tuning it elsewhere would: 10 classes, aux heads
    off, transform_input=False, ImageNet mean/std on RGB in [0, 1], 96 px."""
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, num_classes=10, aux_logits=False, transform_input=False,
                                       init_weights=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    xt = (torch.from_numpy(x[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255 - mean) / std
    yt = torch.from_numpy(y).long()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (32,), generator=gen)
        loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def gate_check(work: Path, steps: int, qemu: bool) -> dict:
    import cv2
    import torch
    from click.testing import CliRunner
    from sklearn.datasets import load_digits

    from edgekit import manifest as mf
    from edgekit.cli import cli

    d = load_digits()
    x = np.stack([cv2.resize((im * 255 / 16).astype(np.uint8), (96, 96)) for im in d.images])
    x = np.repeat(x[..., None], 3, -1)
    y = d.target.astype(np.int64)
    t0 = time.perf_counter()
    net = train_googlenet(x[:1300], y[:1300], steps)
    train_s = time.perf_counter() - t0
    torch.save(net.state_dict(), work / "digits.pth")
    (work / "labels.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    (work / "calib").mkdir()
    for i, img in enumerate(x[:1300][np.random.default_rng(0).permutation(1300)[:300]]):
        cv2.imwrite(str(work / "calib" / f"{i:04d}.png"), img)
    runner = CliRunner()
    b = work / "gn"
    res = runner.invoke(cli, ["export", "--model", "googlenet", "--weights", str(work / "digits.pth"),
                              "--input-size", "96", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
                              "--labels", str(work / "labels.txt"), "-o", str(b)])
    if res.exit_code:
        raise SystemExit(f"export failed: {res.output}")
    t0 = time.perf_counter()
    res = runner.invoke(cli, ["build", str(b), "--int8", "--calib-data", str(work / "calib")])
    build_s = time.perf_counter() - t0
    out = {"train_s": train_s, "build_exit": res.exit_code, "build_output": res.output, "build_s": build_s}
    if res.exit_code:
        return out
    out["validation"] = mf.read(b).validation
    # held-out digits as a camera gives them: uint8 BGR frames through the runtime's crop/resize
    from edgekit.preprocess import fit_frame

    pre = mf.read(b).preprocess
    np.save(work / "x.npy", np.stack([fit_frame(im, pre) for im in x[1300:]]))
    np.save(work / "y.npy", y[1300:])
    (work / "table.py").write_text(TABLE_SCRIPT)
    repo = str(Path(__file__).resolve().parent.parent)
    args = [str(work / "table.py"), repo, str(b), str(work / "x.npy"), str(work / "y.npy")]
    here = subprocess.run([sys.executable, *args, "all,none,simulated"], check=True, capture_output=True, text=True)
    out["table_here"] = json.loads(here.stdout)
    if qemu and shutil.which("qemu-x86_64"):
        avx2 = subprocess.run(["qemu-x86_64", "-cpu", "EPYC-Rome", sys.executable, *args, "all,simulated"],
                              check=True, capture_output=True, text=True)
        out["table_avx2"] = json.loads(avx2.stdout)
    return out


def print_table(t: dict, title: str) -> None:
    print(f"\n{title}\n  CPU: {t['cpu']}\n  FP32 accuracy {t['fp32']:.4f} on 497 held-out digits")
    hows = list(next(iter(t["models"].values())).keys())
    names = {"all": "ORT all optimisations", "none": "ORT optimisations off", "simulated": "TensorRT simulated"}
    print("  " + f"{'model':<22}" + "".join(f"{names[h]:>26}" for h in hows) + "   (agreement / accuracy)")
    for model, row in t["models"].items():
        print("  " + f"{model:<22}" + "".join(f"{row[h][0]:>16.3f} / {row[h][1]:.3f}" for h in hows))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--qemu", action="store_true", help="also measure the table on an emulated AVX2 EPYC")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    cpu = detect()
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-"))
    try:
        sp = speed(work, args.runs, args.threads)
        g = gate_check(work, args.train_steps, args.qemu)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"CPU: {cpu.describe()}  ({os.cpu_count()} cores, {args.threads} threads)")
    print(f"inception_v3, batch 1, 299x299, median of {args.runs} runs")
    print(f"  PyTorch eager FP32                 {sp['torch']:8.1f} ms")
    print(f"  ONNX Runtime FP32                  {sp['fp32']:8.1f} ms   {sp['torch'] / sp['fp32']:4.2f}x PyTorch")
    print(f"  ONNX Runtime INT8 CPU form, 7-bit  {sp['cpu7']:8.1f} ms   {sp['fp32'] / sp['cpu7']:4.2f}x ORT FP32 "
          f"[{cpu.kind}]")
    print(f"  ONNX Runtime INT8 8-bit weights    {sp['cpu8']:8.1f} ms   {sp['fp32'] / sp['cpu8']:4.2f}x ORT FP32 "
          f"(for comparison)")
    trt_ratio = sp["fp32"] / sp["trt_form"]
    print(f"  TensorRT Q/DQ form on ONNX Runtime {sp['trt_form']:8.1f} ms   {trt_ratio:4.2f}x ORT FP32 "
          "(not a CPU model: no fused kernels)")
    print(f"calibration (entropy, two passes) of 500 images: {sp['calibration_500_s']:.1f} s")
    print(f"\nGoogLeNet (torchvision), digits at 96 px, {args.train_steps} steps ({g['train_s']:.0f} s): "
          f"edgekit build BUNDLE --int8 --calib-data <300 flat images>, defaults: exit {g['build_exit']} "
          f"({g['build_s']:.0f} s)")
    if g["build_exit"]:
        print(g["build_output"])
        return
    v = g["validation"]["int8"]
    print(f"  gate: {v['calibration_images']} calibration, {v['validation_images']} validation images "
          f"(labelled: {v['labelled']})")
    for form in ("tensorrt", "cpu", "dla"):
        f = v[form]
        lo, hi = f["top1_agreement_95"]
        print(f"  {form:<9} top-1 agreement {f['top1_agreement']:.3f} (95% {lo:.3f}-{hi:.3f}), "
              f"cosine {f['cosine']:.5f}: {f['status']}")
    f = g["validation"]["fp16"]
    print(f"  fp16      top-1 agreement {f['top1_agreement']:.3f}: {f['status']}")
    print_table(g["table_here"], "held-out accuracy, this CPU")
    if "table_avx2" in g:
        print_table(g["table_avx2"], "held-out accuracy, AMD EPYC-Rome emulated by QEMU (AVX2, no VNNI)")


if __name__ == "__main__":
    main()
