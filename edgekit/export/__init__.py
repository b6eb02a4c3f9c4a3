"""Desktop tier (torch): a model becomes a bundle. The zoo's PyTorch model exported to ONNX, another
framework's ONNX imported, or a model fine-tuned on the user's images. The device tier never imports this."""

from __future__ import annotations
