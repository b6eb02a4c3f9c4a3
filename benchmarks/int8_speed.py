"""INT8 on the CPU, measured in one run: batch-1 latency of inception_v3 with PyTorch eager FP32,
ONNX Runtime FP32 and ONNX Runtime INT8 (the CPU variant), plus calibration time for 500 images.

Speed uses inception_v3 at 299x299. Top-1 agreement needs meaningful logits, and ImageNet weights
cannot be downloaded here, so the same architecture is trained on scikit-learn's digits at 96x96
(a few minutes) and agreement is measured on held-out digits.

    .venv/bin/python benchmarks/int8_speed.py [--runs 40] [--train-steps 150]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgekit import calibdata  # noqa: E402
from edgekit.calibrate import CalibrateRequest, calibrate_bundle  # noqa: E402
from edgekit.export import ExportRequest, export  # noqa: E402
from edgekit.preprocess import fit_frame, to_model_input  # noqa: E402
from edgekit.runners.ort import OrtRunner  # noqa: E402
from edgekit.zoo import get_spec  # noqa: E402


def latency_ms(fn, runs: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def train_v3_on_digits(size: int, steps: int):
    import cv2
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.stack([cv2.resize((im * 255 / 16).astype(np.uint8), (size, size)) for im in d.images])
    x = np.repeat(x[..., None], 3, -1)
    y = d.target
    spec = get_spec("inception_v3")
    pre = spec.preprocess(None, size)
    xt = torch.from_numpy(to_model_input(np.stack([fit_frame(i, pre) for i in x[:1300]]), pre))
    yt = torch.from_numpy(y[:1300]).long()
    torch.manual_seed(0)
    model = spec.builder(10, size)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (32,))
        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x, y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-"))
    try:
        # ---- speed at 299x299, random weights (speed does not depend on the values)
        b = export(ExportRequest("inception_v3", work / "v3", weights="random", parity_random=2)).bundle
        # INT8 models from the shipped photographs (random weights: the gate is opened; agreement below)
        calibrate_bundle(CalibrateRequest(b, None, min_agreement=0.0))
        # calibration time for 500 images: the entropy pass alone, over 500 crops of the shipped photos
        from edgekit import manifest as mf
        from edgekit import quantize

        items = calibdata.discover(calibdata.default_set(), variants=42)[:500]
        man = mf.read(b)
        imgs = calibdata.collect(items, man.preprocess).images
        t0 = time.perf_counter()
        cal = quantize.calibrate(b / "model.onnx", imgs, "entropy")
        calib_s = time.perf_counter() - t0

        x1 = imgs[:1]
        model = get_spec("inception_v3").builder(1000, 299).eval()
        xt = torch.from_numpy(to_model_input(x1, man.preprocess))
        with torch.no_grad():
            t_torch = latency_ms(lambda: model(xt), args.runs)
        with OrtRunner(b / "model.onnx", threads=args.threads) as r:
            t_fp32 = latency_ms(lambda: r.infer(x1), args.runs)
        with OrtRunner(b / "model.int8-cpu.onnx", threads=args.threads) as r:
            t_int8 = latency_ms(lambda: r.infer(x1), args.runs)
        with OrtRunner(b / "model.int8.onnx", threads=args.threads) as r:
            t_int8_trt = latency_ms(lambda: r.infer(x1), args.runs)

        # ---- agreement: inception_v3 trained on digits at 96x96
        t0 = time.perf_counter()
        trained, x, y = train_v3_on_digits(96, args.train_steps)
        train_s = time.perf_counter() - t0
        torch.save(trained.state_dict(), work / "v3digits.pth")
        (work / "labels.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
        d = export(ExportRequest("inception_v3", work / "v3d", weights=str(work / "v3digits.pth"), input_size=96,
                                 labels=work / "labels.txt", parity_random=2)).bundle
        import cv2

        for i, img in enumerate(x[:1300:4]):
            (work / "dcal").mkdir(exist_ok=True)
            cv2.imwrite(str(work / "dcal" / f"{i}.png"), img)
        for i, (img, c) in enumerate(zip(x[1300:], y[1300:], strict=True)):
            (work / "dval" / str(c)).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(work / "dval" / str(c) / f"{i}.png"), img)
        agree = calibrate_bundle(CalibrateRequest(d, work / "dcal", val_data=work / "dval", min_agreement=0.0))
        from edgekit.evaluate import evaluate

        acc = {a.precision: a.top1 for a in evaluate(d, work / "dval")}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"inception_v3, batch 1, 299x299, {args.threads} threads, median of {args.runs} runs")
    print(f"  PyTorch eager FP32      {t_torch:8.1f} ms")
    print(f"  ONNX Runtime FP32       {t_fp32:8.1f} ms   {t_torch / t_fp32:4.2f}x PyTorch")
    print(f"  ONNX Runtime INT8 (cpu) {t_int8:8.1f} ms   {t_fp32 / t_int8:4.2f}x ONNX Runtime FP32 (target >= 2.2x)")
    print(f"  ONNX Runtime INT8 (TensorRT Q/DQ model, for reference) {t_int8_trt:8.1f} ms")
    print(f"calibration (entropy) of 500 images: {calib_s:.1f} s ({500 / calib_s:.1f} images/s), "
          f"{len(cal.ranges)} tensors")
    print(f"agreement, inception_v3 trained on digits ({args.train_steps} steps, {train_s:.0f} s), 96x96, "
          f"{agree.figures['int8']['images']} held-out images:")
    for prec, f in agree.figures.items():
        print(f"  {prec:<9} top-1 agreement {f['top1_agreement']:.3f}  top-5 overlap {f['top5_overlap']:.3f}  "
              f"cosine {f['cosine']:.4f}")
    print("  accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))


if __name__ == "__main__":
    main()
