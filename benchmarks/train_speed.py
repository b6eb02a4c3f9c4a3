"""Training speed and memory of `edgekit train`, on whatever this machine has (CPU or CUDA GPU).

1. A camera-like data set is made here (640x480 JPEGs, 10 classes, each class random views of
   one of edgekit's sample photographs), and `edgekit train` runs on it for --epochs: seconds
   per epoch and images per second, from the run's own history (the first epoch includes
   cuDNN's autotuning and the workers' start).
2. With --memory on a CUDA GPU: each zoo model's training memory per image (peak at batch 16
   minus peak at batch 8, over 8), with mixed precision as edgekit trains on a GPU: the figures
   behind edgekit.export.train_data.TRAIN_MIB_PER_IMAGE, which sizes the default batch on a Jetson.

    python benchmarks/train_speed.py [--model googlenet] [--size 224] [--images 400] [--epochs 2] [--memory]

Prints the CPU's flags and the GPU beside the figures; --out writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_data(root: Path, images: int, seed: int = 0) -> Path:
    import cv2

    from edgekit.images import read_image, sample_images

    photos = [read_image(p) for p in sample_images()]
    rng = np.random.default_rng(seed)
    for k in range(10):
        src = photos[k % len(photos)]
        if k >= len(photos):
            src = np.ascontiguousarray(np.rot90(src, k // len(photos)))
        d = root / f"class_{k}"
        d.mkdir(parents=True)
        for i in range(images // 10):
            h, w = src.shape[:2]
            s = rng.uniform(0.5, 0.9)
            ch, cw = int(h * s), int(w * s)
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            view = cv2.resize(src[y:y + ch, x:x + cw], (640, 480), interpolation=cv2.INTER_AREA)
            view = np.clip(view.astype(np.float32) * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)
            cv2.imwrite(str(d / f"{i:04d}.jpg"), view, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return root


def train_speed(model: str, size: int, images: int, epochs: int, device: str, batch: int | None) -> dict[str, Any]:
    from edgekit.export.train import TrainRequest, train

    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp) / "data", images)
        lines: list[str] = []
        t0 = time.perf_counter()
        res = train(TrainRequest(Path(tmp) / "run", model, data, "random", epochs=epochs, input_size=size,
                                 device=device, batch=batch, patience=0), log=lines.append)
        total = time.perf_counter() - t0
    info = res.info
    return {"model": model, "size": size, "images": info["images"], "device": info["device"],
            "batch": info["config"]["batch"], "workers": info["config"]["workers"], "epochs": info["history"],
            "wall_seconds": round(total, 1), "val_accuracy": info["report"]["val_accuracy"], "log": lines}


def memory_per_image(models: list[str]) -> list[dict[str, Any]]:
    import torch

    from edgekit.export.torch_onnx import wrap
    from edgekit.zoo import get_spec

    rows = []
    for name in models:
        spec = get_spec(name)
        try:
            net = wrap(spec.builder(10, spec.input_size), spec.preprocess(None), False).cuda().train()
        except Exception as exc:  # a builder whose package is missing here (timm)
            rows.append({"model": name, "error": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler("cuda")
        peaks = {}
        for b in (8, 16):
            x = torch.randint(0, 256, (b, spec.input_size, spec.input_size, 3), dtype=torch.uint8, device="cuda")
            y = torch.randint(0, 10, (b,), device="cuda")
            for _ in range(2):  # the second step has the optimiser's state too
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                with torch.autocast("cuda", dtype=torch.float16):
                    loss = torch.nn.functional.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                torch.cuda.synchronize()
            peaks[b] = torch.cuda.max_memory_allocated() / 2**20
        rows.append({"model": name, "size": spec.input_size, "peak_mib_b8": round(peaks[8], 1),
                     "peak_mib_b16": round(peaks[16], 1), "mib_per_image_amp": round((peaks[16] - peaks[8]) / 8, 1)})
        del net, opt
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="googlenet")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    from edgekit.cpuinfo import detect

    out: dict[str, Any] = {"cpu": detect().describe(), "torch": torch.__version__,
                           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(f"CPU: {out['cpu']}; GPU: {out['gpu']}; torch {out['torch']}", flush=True)
    out["train"] = train_speed(args.model, args.size, args.images, args.epochs, args.device, args.batch)
    t = out["train"]
    for h in t["epochs"]:
        print(f"{t['model']} {t['size']} px on {t['device']}, batch {t['batch']}, {t['workers']} workers: epoch "
              f"{h['epoch']} {h['seconds']:.1f} s ({h['images_per_s']:.1f} training images/s, "
              f"{t['images']['train']} images + {t['images']['val']} validated)", flush=True)
    if args.memory and torch.cuda.is_available():
        out["memory"] = memory_per_image(["googlenet", "bn_inception", "inception_v3", "inception_v4",
                                          "inception_resnet_v1", "inception_resnet_v2"])
        for r in out["memory"]:
            print(f"memory {r['model']}: {r.get('mib_per_image_amp', r.get('error'))} MiB per image (AMP)", flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
