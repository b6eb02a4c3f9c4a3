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
        self.streams = 0  # streams and events made and not destroyed (cuda-python does not collect them)

    def push(self) -> None:
        self.depth.n = getattr(self.depth, "n", 0) + 1

    def pop(self) -> None:
        self.depth.n -= 1
        assert self.depth.n >= 0

    def stream(self):
        self.streams += 1
        return object()

    def destroy(self, handle) -> None:
        assert getattr(self.depth, "n", 0) > 0, "stream or event destroyed with no context current"
        self.streams -= 1

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
        self.streams += 1
        return [0.0]

    def record(self, event, stream) -> None:
        import time

        event[0] = time.perf_counter()

    def elapsed_ms(self, start, end) -> float:
        return (end[0] - start[0]) * 1000

    def _mem_info(self):
        # cuMemGetInfo answers CUDA_ERROR_INVALID_CONTEXT with no context current
        assert getattr(self.depth, "n", 0) > 0, "device memory queried with no context current"
        return 1 << 30, 1 << 31


def fake_tensorrt(onnx_path: Path, version: str = "10.3.0", profiles: int = 1) -> types.ModuleType:
    """A TensorRT module whose runtime objects obey TensorRT's documented rules for ``version``:

    - optimisation profiles (IExecutionContext docs, 8.x): the first context created takes
      profile 0, later ones none until ``set_optimization_profile_async``; a profile in use by
      another live context is refused ("Profile 0 has been chosen by another IExecutionContext")
      unless profiles are shared (10.0+, or 8.6 with PROFILE_SHARING_0806 set at build time);
    - a context serves one call at a time (never concurrently);
    - a version-compatible plan deserialises only with ``engine_host_code_allowed`` (8.6+);
    - shapes outside the profile are refused by ``set_input_shape``.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    np_of = {"tensor(uint8)": (np.uint8, "UINT8"), "tensor(float)": (np.float32, "FLOAT")}
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version
    mod.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    mod.errors = []
    major_minor = tuple(int(x) for x in version.split(".")[:2])
    contexts: list = []

    class Logger:
        WARNING = 2

        def __init__(self, level) -> None:
            pass

    class Context:
        def __init__(self, engine) -> None:
            self.engine = engine
            self.shape = None
            self.addr: dict[str, int] = {}
            self.busy = threading.Lock()
            self.profile = None
            if engine.shared or not engine.created:
                self._take(0)
            engine.created += 1
            contexts.append(self)

        def _take(self, k) -> bool:
            owner = self.engine.owners.get(k)
            if not self.engine.shared and owner is not None and owner is not self:
                mod.errors.append(f"Profile {k} has been chosen by another IExecutionContext")
                return False
            self.engine.owners[k] = self
            self.profile = k
            return True

        def set_optimization_profile_async(self, k, stream) -> bool:
            if not 0 <= k < self.engine.num_optimization_profiles:
                return False
            return self._take(k)

        def set_input_shape(self, name, shape) -> bool:
            assert name == inp.name
            if self.profile is None:  # TensorRT: "no optimization profile has been set"
                mod.errors.append("set_input_shape on a context without an optimization profile")
                return False
            self.shape = tuple(shape)
            return 1 <= shape[0] <= 8

        def get_tensor_shape(self, name):
            return (self.shape[0], 1000) if name == out.name else self.shape

        def set_tensor_address(self, name, ptr) -> bool:
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream) -> bool:
            assert self.busy.acquire(blocking=False), "a context used by two calls at once"
            try:
                dt = np_of[inp.type][0]
                n = int(np.prod(self.shape))
                x = np.frombuffer((ctypes.c_byte * (n * np.dtype(dt).itemsize)).from_address(self.addr[inp.name]),
                                  dtype=dt).reshape(self.shape)
                y = sess.run([out.name], {inp.name: x.copy()})[0].astype(np.float32)
                ctypes.memmove(self.addr[out.name], y.ctypes.data, y.nbytes)
            finally:
                self.busy.release()
            return True

        def __del__(self) -> None:
            for k, owner in list(self.engine.owners.items()):
                if owner is self:
                    del self.engine.owners[k]

    class Engine:
        num_io_tensors = 2

        def __init__(self, shared_by_build: bool) -> None:
            self.num_optimization_profiles = profiles
            self.owners: dict = {}
            self.created = 0
            self.shared = major_minor >= (10, 0) or (major_minor >= (8, 6) and shared_by_build)

        def get_tensor_name(self, i):
            return [inp.name, out.name][i]

        def get_tensor_mode(self, name):
            return mod.TensorIOMode.INPUT if name == inp.name else mod.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return types.SimpleNamespace(name=np_of[inp.type][1] if name == inp.name else "FLOAT")

        def get_tensor_shape(self, name):
            return [-1, *inp.shape[1:]] if name == inp.name else [-1, 1000]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger) -> None:
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            assert data.startswith(b"plan")
            if b"version-compatible" in data and not self.engine_host_code_allowed:
                mod.errors.append("the plan holds host code: set engine_host_code_allowed")
                return None
            return Engine(shared_by_build=b"profile-sharing" in data)

    mod.Logger, mod.Runtime = Logger, Runtime
    mod.contexts = contexts
    return mod


def make_runner(onnx_path, tmp_path, monkeypatch, version="10.3.0", profiles=1, plan=b"plan", entry=None):
    fake = fake_tensorrt(onnx_path, version, profiles)
    monkeypatch.setattr(trt_runner, "load_trt", lambda prefer=None: fake)
    (tmp_path / "e.plan").write_bytes(plan)
    cuda = HostCuda()
    r = trt_runner.TrtRunner(tmp_path / "e.plan", {"trt_flavour": "tensorrt", **(entry or {})}, cuda=cuda)
    return r, fake, cuda


@pytest.fixture()
def runner(googlenet_bundle, tmp_path, monkeypatch):
    r, fake, cuda = make_runner(googlenet_bundle / "model.onnx", tmp_path, monkeypatch)
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


def _frames(bundle):
    with classifier.load(bundle, backend="onnxruntime", precision="fp32") as clf:
        return [clf.prepare(read_image(p)) for p in sample_images()]


@pytest.mark.parametrize("version,profiles,plan,entry,most", [
    ("10.3.0", 1, b"plan", {}, 6),  # contexts share profile 0: one per concurrent call (6 threads)
    ("8.6.1", 1, b"plan profile-sharing", {"profile_sharing": True}, 6),  # built with PROFILE_SHARING_0806
    ("8.6.1", 1, b"plan", {}, 1),  # an 8.6 plan built without it: one context, calls take turns
    ("8.5.2", 2, b"plan", {"profiles": 2}, 2),  # JetPack 5: one profile per context, as edgekit builds it
], ids=["trt10", "trt8.6-shared", "trt8.6-unshared", "trt8.5-two-profiles"])
def test_any_thread_may_classify_on_every_version(googlenet_bundle, tmp_path, monkeypatch, version, profiles, plan,
                                                   entry, most):
    r, fake, cuda = make_runner(googlenet_bundle / "model.onnx", tmp_path, monkeypatch, version, profiles, plan,
                                entry)
    frames = _frames(googlenet_bundle)
    one = [r.infer(f[None]).argmax() for f in frames]
    out = run_threads(lambda i: [r.infer(f[None]).argmax() for f in frames * 3], n=6)
    assert all(o == one * 3 for o in out)
    assert not fake.errors, fake.errors
    assert 1 <= len(fake.contexts) <= most
    assert len({c.profile for c in fake.contexts}) == (len(fake.contexts) if not fake.contexts[0].engine.shared else 1)
    r.close()
    assert cuda.live == {} and cuda.streams == 0  # buffers, streams and events all released


def test_nothing_is_kept_per_thread(runner, googlenet_bundle):
    r, fake, cuda = runner
    frames = _frames(googlenet_bundle)
    for _ in range(5):  # short-lived threads, as a host application's workers come and go
        run_threads(lambda i: r.infer(frames[i % len(frames)][None]), n=3)
    assert len(fake.contexts) <= 3 and len(r._slots) <= 3


def test_version_compatible_plans_load_with_host_code_allowed(googlenet_bundle, tmp_path, monkeypatch):
    r, fake, _ = make_runner(googlenet_bundle / "model.onnx", tmp_path, monkeypatch, "10.3.0", 1,
                             b"plan version-compatible", {"version_compatible": True})
    assert r.infer(np.stack(_frames(googlenet_bundle)[:1])).shape == (1, 1000)
    r.close()


def test_batch_outside_the_profile_says_how_to_rebuild(runner):
    r, _, _ = runner
    with pytest.raises(Exception, match="--batch MIN:OPT:MAX"):
        r.infer(np.zeros((9, 224, 224, 3), np.uint8))
