"""The TensorRT runner's own logic, with the GPU replaced by host memory (there is no GPU here).

What is fake, and why: CUDA (no device: "device" memory is host memory, copies are memcpy) and
TensorRT's runtime objects (a Runtime must never be made without a GPU). The fake engine runs
the bundle's real ONNX model with ONNX Runtime, reading its input from and writing its output
to the raw addresses the runner hands it with ``set_tensor_address``, as TensorRT does. So this
checks the runner's buffers, shapes, addresses, copies, per-thread contexts and clean-up; the
real thing is checked by tests/gpu (make test-gpu) on a GPU.
"""

from __future__ import annotations

import ctypes
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from edgekit import classifier
from edgekit.images import read_image, sample_images
from edgekit.runners import trt as trt_runner
from edgekit.runners.cuda import Cuda
from tests.threads import run_threads


class HostCuda(Cuda):
    binding = "host-memory (test)"
    device_name = "no GPU (test)"
    compute_capability = "8.9"

    def __init__(self) -> None:
        self.live: dict[int, np.ndarray] = {}
        self.depth = threading.local()

    def push(self) -> None:
        self.depth.n = getattr(self.depth, "n", 0) + 1

    def pop(self) -> None:
        self.depth.n -= 1
        assert self.depth.n >= 0

    def stream(self):
        return object()

    def handle(self, obj) -> int:
        return obj.ctypes.data if isinstance(obj, np.ndarray) else id(obj)

    def pinned(self, shape, dtype):
        return np.zeros(shape, dtype)

    def alloc(self, nbytes):
        assert getattr(self.depth, "n", 0) > 0, "device memory allocated with no context current"
        mem = np.zeros(nbytes, np.uint8)
        self.live[mem.ctypes.data] = mem
        return mem

    def free(self, mem) -> None:
        del self.live[mem.ctypes.data]

    def to_device(self, dst, src, stream) -> None:
        dst[: src.nbytes] = src.reshape(-1).view(np.uint8)

    def to_host(self, dst, src, stream) -> None:
        dst.reshape(-1).view(np.uint8)[:] = src[: dst.nbytes]

    def synchronize(self, stream) -> None:
        pass

    def event(self):
        return [0.0]

    def record(self, event, stream) -> None:
        import time

        event[0] = time.perf_counter()

    def elapsed_ms(self, start, end) -> float:
        return (end[0] - start[0]) * 1000

    def memory(self):
        return 1 << 30, 1 << 31


def fake_tensorrt(onnx_path: Path) -> types.ModuleType:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    np_of = {"tensor(uint8)": (np.uint8, "UINT8"), "tensor(float)": (np.float32, "FLOAT")}
    mod = types.ModuleType("tensorrt")
    mod.__version__ = "10.3.0"
    mod.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    contexts: list = []

    class Logger:
        WARNING = 2

        def __init__(self, level) -> None:
            pass

    class Context:
        def __init__(self) -> None:
            self.shape = None
            self.addr: dict[str, int] = {}
            self.thread = threading.get_ident()
            contexts.append(self)

        def set_input_shape(self, name, shape) -> bool:
            assert name == inp.name
            self.shape = tuple(shape)
            return 1 <= shape[0] <= 8

        def get_tensor_shape(self, name):
            return (self.shape[0], 1000) if name == out.name else self.shape

        def set_tensor_address(self, name, ptr) -> bool:
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream) -> bool:
            assert threading.get_ident() == self.thread, "a context used from two threads"
            dt = np_of[inp.type][0]
            n = int(np.prod(self.shape))
            x = np.frombuffer((ctypes.c_byte * (n * np.dtype(dt).itemsize)).from_address(self.addr[inp.name]),
                              dtype=dt).reshape(self.shape)
            y = sess.run([out.name], {inp.name: x.copy()})[0].astype(np.float32)
            ctypes.memmove(self.addr[out.name], y.ctypes.data, y.nbytes)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return [inp.name, out.name][i]

        def get_tensor_mode(self, name):
            return mod.TensorIOMode.INPUT if name == inp.name else mod.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return types.SimpleNamespace(name=np_of[inp.type][1] if name == inp.name else "FLOAT")

        def get_tensor_shape(self, name):
            return [-1, *inp.shape[1:]] if name == inp.name else [-1, 1000]

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, data):
            assert data == b"plan"
            return Engine()

    mod.Logger, mod.Runtime = Logger, Runtime
    mod.contexts = contexts
    return mod


@pytest.fixture()
def runner(googlenet_bundle, tmp_path, monkeypatch):
    fake = fake_tensorrt(googlenet_bundle / "model.onnx")
    monkeypatch.setattr(trt_runner, "load_trt", lambda prefer=None: fake)
    (tmp_path / "e.plan").write_bytes(b"plan")
    cuda = HostCuda()
    r = trt_runner.TrtRunner(tmp_path / "e.plan", {"trt_flavour": "tensorrt"}, cuda=cuda)
    yield r, fake, cuda
    r.close()


def test_runner_matches_onnxruntime_across_batch_changes(runner, googlenet_bundle):
    r, _, cuda = runner
    with classifier.load(googlenet_bundle, backend="onnxruntime", precision="fp32") as clf:
        frames = [clf.prepare(read_image(p)) for p in sample_images()]
        for batch in (1, 3, 1, 4):
            x = np.stack((frames * 2)[:batch])
            got, want = r.infer(x), clf.runner.infer(x)
            assert got.shape == (batch, 1000) and np.array_equal(got, want)
    assert r.last_device_ms is not None
    assert "no GPU (test)" in r.description and "sm_89" in r.description
    assert len(cuda.live) == 2  # only the current batch's input and output buffers are held


def test_one_context_per_thread_and_same_answers(runner, googlenet_bundle):
    r, fake, cuda = runner
    with classifier.load(googlenet_bundle, backend="onnxruntime", precision="fp32") as clf:
        frames = [clf.prepare(read_image(p)) for p in sample_images()]
    one = [r.infer(f[None]).argmax() for f in frames]
    out = run_threads(lambda i: [r.infer(f[None]).argmax() for f in frames * 3])
    assert all(out[i] == one * 3 for i in range(4))
    assert len(fake.contexts) == 5 and len({c.thread for c in fake.contexts}) == 5
    r.close()
    assert cuda.live == {}  # every thread's device buffers freed


def test_batch_outside_the_profile_says_how_to_rebuild(runner):
    r, _, _ = runner
    with pytest.raises(Exception, match="--batch MIN:OPT:MAX"):
        r.infer(np.zeros((9, 224, 224, 3), np.uint8))
