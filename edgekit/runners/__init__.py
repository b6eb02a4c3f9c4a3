"""Inference backends behind one interface: a context manager with ``infer``."""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np


def default_threads() -> int:
    """CPU threads for a runner when neither the caller nor a device profile says: up to 4."""
    return min(4, os.cpu_count() or 1)


class Runner(Protocol):
    backend: str
    description: str

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        """Run the model on one input batch; returns the first output."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...
