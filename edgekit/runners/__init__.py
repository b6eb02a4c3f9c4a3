"""Inference backends behind one interface: a context manager with ``infer``."""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np


def default_threads() -> int:
    """CPU threads for a runner when neither the caller nor a device profile says: up to 4, and no
    more than the cores this process may use (taskset, a container's cpuset), not the machine's."""
    return min(4, usable_cores())


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


class Runner(Protocol):
    backend: str
    description: str

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        """Run the model on one input batch; returns the first output."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...
