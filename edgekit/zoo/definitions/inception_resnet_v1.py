"""Inception-ResNet-v1: Szegedy, Ioffe, Vanhoucke, Alemi, "Inception-v4, Inception-ResNet
and the Impact of Residual Connections on Learning", AAAI 2017.

Stem: Figure 14. Inception-ResNet-A/B/C: Figures 10, 11, 13, residuals scaled by 0.17,
0.10 and 0.20 (section 3.3: scaling between 0.1 and 0.3 stabilises training). Reduction-A:
Figure 7 with k=192, l=192, m=256, n=384 (Table 1). Reduction-B: Figure 12. Block counts
5/10/5 (Figure 9). As in the authors' TF-slim reference release, the last C block is
followed by one more C block without scaling or ReLU before pooling. Batch norm follows
every convolution except those that close a residual (section 3.2).
"""

from __future__ import annotations

import torch
from torch import nn


class _Conv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int | tuple[int, int], stride: int = 1,
                 pad: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class _Residual(nn.Module):
    """Branches -> concat -> 1x1 linear conv -> scaled residual add (-> ReLU)."""

    def __init__(self, branches: list[nn.Module], concat: int, channels: int, scale: float,
                 relu: bool = True) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.up = nn.Conv2d(concat, channels, 1, bias=True)
        self.scale = scale
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(torch.cat([b(x) for b in self.branches], 1))
        x = x + self.scale * y
        return torch.relu(x) if self.relu else x


def _block_a(scale: float = 0.17) -> _Residual:  # Figure 10, 35x35x256
    return _Residual(
        [
            _Conv(256, 32, 1),
            nn.Sequential(_Conv(256, 32, 1), _Conv(32, 32, 3, pad=1)),
            nn.Sequential(_Conv(256, 32, 1), _Conv(32, 32, 3, pad=1), _Conv(32, 32, 3, pad=1)),
        ],
        96, 256, scale,
    )


def _block_b(scale: float = 0.10) -> _Residual:  # Figure 11, 17x17x896
    return _Residual(
        [
            _Conv(896, 128, 1),
            nn.Sequential(_Conv(896, 128, 1), _Conv(128, 128, (1, 7), pad=(0, 3)),
                          _Conv(128, 128, (7, 1), pad=(3, 0))),
        ],
        256, 896, scale,
    )


def _block_c(scale: float = 0.20, relu: bool = True) -> _Residual:  # Figure 13, 8x8x1792
    return _Residual(
        [
            _Conv(1792, 192, 1),
            nn.Sequential(_Conv(1792, 192, 1), _Conv(192, 192, (1, 3), pad=(0, 1)),
                          _Conv(192, 192, (3, 1), pad=(1, 0))),
        ],
        384, 1792, scale, relu,
    )


class _Concat(nn.Module):
    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


class InceptionResNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(  # Figure 14: 299x299x3 -> 35x35x256
            _Conv(3, 32, 3, 2), _Conv(32, 32, 3), _Conv(32, 64, 3, pad=1),
            nn.MaxPool2d(3, 2), _Conv(64, 80, 1), _Conv(80, 192, 3), _Conv(192, 256, 3, 2),
        )
        self.stage_a = nn.Sequential(*[_block_a() for _ in range(5)])
        self.reduction_a = _Concat(  # Figure 7, k=192 l=192 m=256 n=384 -> 17x17x896
            _Conv(256, 384, 3, 2),
            nn.Sequential(_Conv(256, 192, 1), _Conv(192, 192, 3, pad=1), _Conv(192, 256, 3, 2)),
            nn.MaxPool2d(3, 2),
        )
        self.stage_b = nn.Sequential(*[_block_b() for _ in range(10)])
        self.reduction_b = _Concat(  # Figure 12 -> 8x8x1792
            nn.Sequential(_Conv(896, 256, 1), _Conv(256, 384, 3, 2)),
            nn.Sequential(_Conv(896, 256, 1), _Conv(256, 256, 3, 2)),
            nn.Sequential(_Conv(896, 256, 1), _Conv(256, 256, 3, pad=1), _Conv(256, 256, 3, 2)),
            nn.MaxPool2d(3, 2),
        )
        self.stage_c = nn.Sequential(*[_block_c() for _ in range(5)], _block_c(1.0, relu=False))
        self.num_features = 1792
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)  # the paper keeps 0.8
        self.classif = nn.Linear(1792, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage_a(self.stem(x))
        x = self.stage_b(self.reduction_a(x))
        return self.stage_c(self.reduction_b(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.global_pool(self.forward_features(x)), 1)
        return self.classif(self.dropout(x))
