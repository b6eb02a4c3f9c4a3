"""Reduced precision with proof: calibration images, activation ranges, the FP16 and INT8 models
(TensorRT's Q/DQ form and the CPU form), and the accuracy gate each must pass. No torch."""

from __future__ import annotations
