"""PyTorch definitions of the zoo models that timm and torchvision lack (BN-Inception,
Inception-ResNet v1). Desktop tier: imported only when weights.build makes a model."""

from __future__ import annotations
