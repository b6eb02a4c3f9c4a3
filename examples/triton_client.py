"""Classify images through Triton Inference Server, with a model from `edgekit export-triton`.

    pip install "tritonclient[http]" opencv-python-headless numpy
    python examples/triton_client.py --model inception_v4_onnx_fp32 \
        --preprocess model_repository/inception_v4_onnx_fp32/preprocess.json cat.jpg dog.jpg

The model takes the frame itself (uint8, H x W x 3, BGR): the graph does colour order,
scaling and normalisation, so the client only crops and resizes, once per image.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np


def prepare(path: str, height: int, width: int, crop_fraction: float = 0.875,
            interpolation: str = "bilinear") -> np.ndarray:
    """Centre crop of the short side (crop_fraction of it) resized to (height, width), in one resize."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"error: cannot read {path} as an image")
    h, w = img.shape[:2]
    # edgekit's geometry (edgekit/preprocess.py crop_box): "resize the short side to size / crop_fraction,
    # then centre-crop", done as one crop in frame coordinates and one resize
    scale = min(h / height, w / width) * crop_fraction
    ch, cw = min(h, max(1, round(height * scale))), min(w, max(1, round(width * scale)))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = img[y0:y0 + ch, x0:x0 + cw]
    flag = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}.get(interpolation, cv2.INTER_LINEAR)
    return cv2.resize(crop, (width, height), interpolation=flag)


def request(images: np.ndarray, input_name: str, output_name: str, topk: int):
    """The Triton inputs and outputs for one batch; the output asks for Triton's top-k classification."""
    import tritonclient.http as httpclient

    inp = httpclient.InferInput(input_name, list(images.shape), "UINT8")
    inp.set_data_from_numpy(images)
    out = httpclient.InferRequestedOutput(output_name, class_count=topk)
    return [inp], [out]


def parse(rows: np.ndarray) -> list[list[tuple[float, int, str]]]:
    """Triton's classification strings "score:index:label" as tuples, per image."""
    result = []
    for row in rows.reshape(rows.shape[0], -1):
        items = []
        for entry in row:
            text = entry.decode() if isinstance(entry, bytes) else str(entry)
            score, index, label = text.split(":", 2)
            items.append((float(score), int(index), label))
        result.append(items)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+")
    ap.add_argument("--url", default="localhost:8000")
    ap.add_argument("--model", required=True)
    ap.add_argument("--preprocess", type=Path, default=None, help="preprocess.json written beside config.pbtxt")
    ap.add_argument("--topk", type=int, default=5)
    args = ap.parse_args()
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(args.url)
    if not client.is_model_ready(args.model):
        sys.exit(f"error: model {args.model} is not ready on {args.url}; is tritonserver running with the repository?")
    meta = client.get_model_metadata(args.model)
    inp, out = meta["inputs"][0], meta["outputs"][0]
    height, width = (int(d) for d in inp["shape"][-3:-1])
    pre = json.loads(args.preprocess.read_text()) if args.preprocess else {}
    batch = np.stack([prepare(p, height, width, pre.get("crop_fraction", 0.875), pre.get("interpolation", "bilinear"))
                      for p in args.images])
    inputs, outputs = request(batch, inp["name"], out["name"], args.topk)
    result = client.infer(args.model, inputs, outputs=outputs)
    for path, top in zip(args.images, parse(result.as_numpy(out["name"])), strict=True):
        print(path)
        for score, index, label in top:
            print(f"  {score:7.3f}  {label} ({index})")


if __name__ == "__main__":
    main()
