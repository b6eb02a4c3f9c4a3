"""Real labelled images for INT8 tests: scikit-learn's handwritten digits (UCI, 1,797 images).

Upscaled to model size and trained on by GoogLeNet from the zoo for 250 steps: about a minute on two
quiet cores (64 s in a fresh-clone make test), several when other work shares them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def images(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size, 3) uint8 BGR (grey) digits and their labels 0-9."""
    import cv2
    from sklearn.datasets import load_digits

    d = load_digits()
    grey = [cv2.resize((im * 255 / 16).astype(np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)
            for im in d.images]
    return np.repeat(np.stack(grey)[..., None], 3, -1), d.target.astype(np.int64)


def write_folder(root: Path, imgs: np.ndarray, labels: np.ndarray, by_class: bool = True) -> Path:
    """ImageFolder layout (root/<digit>/<n>.png), or flat when by_class is False."""
    import cv2

    for i, (img, c) in enumerate(zip(imgs, labels, strict=True)):
        d = root / str(int(c)) if by_class else root
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i:05d}.png"), img)
    return root


def train_googlenet(x: np.ndarray, y: np.ndarray, size: int = 64, steps: int = 250, seed: int = 0):
    """GoogLeNet (zoo definition, random init) trained on images already at model size."""
    import torch

    from edgekit.preprocess import fit_frame, to_model_input
    from edgekit.zoo import get_spec

    torch.manual_seed(seed)
    torch.set_num_threads(2)  # the same training on a 2-core CI box and a bigger desktop
    spec = get_spec("googlenet")
    pre = spec.preprocess(None, size)
    # train on exactly what the runtime will feed: the same crop/resize, then the same normalisation
    xt = torch.from_numpy(to_model_input(np.stack([fit_frame(i, pre) for i in x]), pre))
    yt = torch.from_numpy(y)
    model = spec.builder(10, size)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (32,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def trained_bundle(root: Path, train: int, out: str = "fp32") -> tuple[Path, np.ndarray, np.ndarray]:
    """GoogLeNet trained on the first ``train`` digits, exported as a bundle at ``root/out``.

    Returns (bundle, images, labels); the digits.pth and labels.txt it used stay in ``root``.
    """
    import torch

    from edgekit.export.torch_onnx import ExportRequest, export

    x, y = images()
    model = train_googlenet(x[:train], y[:train])
    torch.save(model.state_dict(), root / "digits.pth")
    (root / "labels.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    bundle = export(ExportRequest("googlenet", root / out, weights=str(root / "digits.pth"), input_size=64,
                                  labels=root / "labels.txt")).bundle
    return bundle, x, y
