"""The CUDA memory and stream module on a real GPU (marked gpu: skipped where there is none).

Round trip through pinned host and device memory, use from several threads (the context is
pushed and popped per call), and copies on our stream overlapping compute on another.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgekit.trt.cuda import available, open_cuda
from tests.threads import run_threads

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", params=["cuda-python", "pycuda"])
def cuda(request):
    if request.param not in available():
        pytest.skip(f"{request.param} not installed")
    return open_cuda(request.param)


def round_trip(cuda, data: np.ndarray) -> np.ndarray:
    """``data`` through pinned host memory to the device and back, on a stream of our own."""
    with cuda.current():
        s = cuda.stream()
        host, back = cuda.pinned(data.shape, data.dtype), cuda.pinned(data.shape, data.dtype)
        host[...] = data
        mem = cuda.alloc(data.nbytes)
        cuda.to_device(mem, host, s)
        cuda.to_host(back, mem, s)
        cuda.synchronize(s)
        cuda.free(mem)
    return np.array(back)


def test_round_trip_and_device_facts(cuda):
    assert cuda.device_name and cuda.compute_capability.count(".") == 1
    data = np.random.default_rng(0).integers(0, 255, (4, 3, 299, 299), dtype=np.uint8)
    assert np.array_equal(round_trip(cuda, data), data)
    with cuda.current():
        free, total = cuda.memory()
    assert 0 < free <= total


def test_any_thread_can_call(cuda):
    def work(seed: int) -> None:
        for _ in range(20):
            data = np.random.default_rng(seed).standard_normal((1, 1000)).astype(np.float32)
            assert np.array_equal(round_trip(cuda, data), data)

    run_threads(work)


def test_copies_overlap_compute(cuda):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    a = torch.randn(8192, 8192, device="cuda")
    compute_stream = torch.cuda.Stream()

    def compute() -> None:
        with torch.cuda.stream(compute_stream):
            for _ in range(12):
                a @ a

    nbytes = 512 << 20
    with cuda.current():
        s = cuda.stream()
        host = cuda.pinned((nbytes,), np.dtype(np.uint8))
        mem = cuda.alloc(nbytes)

        def copies() -> None:
            for _ in range(4):
                cuda.to_device(mem, host, s)

        def timed(*parts) -> float:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for p in parts:
                p()
            cuda.synchronize(s)
            torch.cuda.synchronize()
            return time.perf_counter() - t0

        timed(compute, copies)  # warm-up
        t_copy, t_compute, t_both = timed(copies), timed(compute), timed(compute, copies)
        cuda.free(mem)
    print(f"copies {t_copy * 1e3:.1f} ms, compute {t_compute * 1e3:.1f} ms, together {t_both * 1e3:.1f} ms")
    assert t_both < 0.9 * (t_copy + t_compute)
