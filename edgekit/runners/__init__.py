"""Inference backends behind one interface: a context manager with ``infer``."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Runner(Protocol):
    backend: str
    description: str

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        """Run the model on one input batch; returns the first output."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...
