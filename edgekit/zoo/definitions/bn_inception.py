"""BN-Inception (Inception v2): Ioffe & Szegedy, "Batch Normalization", ICML 2015, Figure 5.

GoogLeNet with batch normalisation after every convolution, each 5x5 convolution replaced
by two stacked 3x3 convolutions, and stride-2 "pass-through" modules (3c, 4e) that reduce
the grid instead of separate pooling layers. Module names follow the authors' Caffe
release (conv1_7x7_s2, inception_3a_1x1, ...), so the widely used ImageNet port of those
weights loads without renaming. Convolutions keep their bias, as in that release.
"""

from __future__ import annotations

import torch
from torch import nn

# Figure 5 of the paper: per module, #1x1, #3x3 reduce, #3x3, #double 3x3 reduce,
# #double 3x3, pool type, pool projection (0: none, pass-through), stride.
_MODULES: tuple[tuple[str, int, int, int, int, int, str, int, int], ...] = (
    ("3a", 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 352, 192, 320, 192, 224, "max", 128, 1),
)


class _ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=True)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class _InceptionModule(nn.Module):
    def __init__(self, cin: int, cfg: tuple[str, int, int, int, int, int, str, int, int]) -> None:
        super().__init__()
        _, n1, r3, n3, rd, nd, pool, proj, stride = cfg
        self.b1 = _ConvBN(cin, n1, 1) if n1 else None
        self.b3_reduce = _ConvBN(cin, r3, 1)
        self.b3 = _ConvBN(r3, n3, 3, stride, 1)
        self.bd_reduce = _ConvBN(cin, rd, 1)
        self.bd_1 = _ConvBN(rd, nd, 3, 1, 1)
        self.bd_2 = _ConvBN(nd, nd, 3, stride, 1)
        if stride == 2:
            self.pool: nn.Module = nn.MaxPool2d(3, 2, ceil_mode=True)
        elif pool == "max":
            self.pool = nn.MaxPool2d(3, 1, 1, ceil_mode=True)
        else:
            self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=True)
        self.proj = _ConvBN(cin, proj, 1) if proj else None
        self.out_channels = n1 + n3 + nd + (proj if proj else cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        if self.b1 is not None:
            outs.append(self.b1(x))
        outs.append(self.b3(self.b3_reduce(x)))
        outs.append(self.bd_2(self.bd_1(self.bd_reduce(x))))
        p = self.pool(x)
        outs.append(self.proj(p) if self.proj is not None else p)
        return torch.cat(outs, 1)


class BNInception(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _ConvBN(3, 64, 7, 2, 3),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            _ConvBN(64, 64, 1),
            _ConvBN(64, 192, 3, 1, 1),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        )
        blocks = []
        cin = 192
        for cfg in _MODULES:
            m = _InceptionModule(cin, cfg)
            blocks.append(m)
            cin = m.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.num_features = cin
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.last_linear = nn.Linear(cin, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(torch.flatten(self.global_pool(self.forward_features(x)), 1))


def caffe_key_map(model: BNInception) -> dict[str, str]:
    """Our parameter names -> the Caffe release's names (conv1_7x7_s2, inception_3a_1x1_bn...)."""
    names: dict[str, str] = {}
    stem = ["conv1_7x7_s2", None, "conv2_3x3_reduce", "conv2_3x3", None]
    branch = {
        "b1": "1x1", "b3_reduce": "3x3_reduce", "b3": "3x3", "bd_reduce": "double_3x3_reduce",
        "bd_1": "double_3x3_1", "bd_2": "double_3x3_2", "proj": "pool_proj",
    }
    for key in model.state_dict():
        parts = key.split(".")
        if parts[0] == "stem":
            caffe = stem[int(parts[1])]
            rest = parts[2:]
        elif parts[0] == "blocks":
            caffe = f"inception_{_MODULES[int(parts[1])][0]}_{branch[parts[2]]}"
            rest = parts[3:]
        else:
            names[key] = key
            continue
        assert caffe is not None
        layer, attr = rest[0], rest[1]
        names[key] = f"{caffe}.{attr}" if layer == "conv" else f"{caffe}_bn.{attr}"
    return names
