"""Hand a bundle to NVIDIA's serving stacks: DeepStream's nvinfer, Triton's model repository, and
JetPack 4's older TensorRT. No torch."""

from __future__ import annotations
