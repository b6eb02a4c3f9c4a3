"""CUDA memory, streams and contexts behind one small interface (gpu tier).

Two bindings serve it: pycuda (the default where installed: JetPack users have it) and
NVIDIA's cuda-python (``cuda.bindings.driver``). Both use the driver API with the device's
primary context, pushed before and popped after every call, so a runner works from any
thread: the classic pycuda ``explicit_context_dependent failed`` comes from a context made
current on one thread and used on another, which this scheme never does.
"""

from __future__ import annotations

import ctypes
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from edgekit.errors import DeviceError, MissingDependencyError

BINDINGS = ("pycuda", "cuda-python")


class CudaError(DeviceError):
    """A CUDA driver call failed."""


class Cuda:
    """One device's primary context, with what a runner needs: memory, copies, streams, events."""

    binding: str = ""
    device_name: str = ""
    compute_capability: str = ""  # "8.7"

    @contextmanager
    def current(self) -> Iterator[None]:
        """The context current on this thread for the block, whichever thread this is."""
        self.push()
        try:
            yield
        finally:
            self.pop()

    def push(self) -> None:
        raise NotImplementedError

    def pop(self) -> None:
        raise NotImplementedError

    def stream(self) -> Any:
        """A new non-blocking stream; ``handle(stream)`` is the integer TensorRT takes."""
        raise NotImplementedError

    def handle(self, obj: Any) -> int:
        raise NotImplementedError

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """Page-locked host memory as a numpy array (freed with the array)."""
        raise NotImplementedError

    def alloc(self, nbytes: int) -> Any:
        """Device memory; ``handle(...)`` gives its address; freed with ``free``."""
        raise NotImplementedError

    def free(self, mem: Any) -> None:
        raise NotImplementedError

    def to_device(self, dst: Any, src: np.ndarray, stream: Any) -> None:
        raise NotImplementedError

    def to_host(self, dst: np.ndarray, src: Any, stream: Any) -> None:
        raise NotImplementedError

    def synchronize(self, stream: Any) -> None:
        raise NotImplementedError

    def event(self) -> Any:
        raise NotImplementedError

    def destroy(self, stream_or_event: Any) -> None:
        """Release a stream or an event made here (cuda-python's handles are not garbage-collected)."""

    def record(self, event: Any, stream: Any) -> None:
        raise NotImplementedError

    def elapsed_ms(self, start: Any, end: Any) -> float:
        """Device time between two recorded events (waits for ``end``)."""
        raise NotImplementedError

    def memory(self) -> tuple[int, int]:
        """(free, total) device memory in bytes, asked inside the context (the driver answers
        CUDA_ERROR_INVALID_CONTEXT on a thread with none current)."""
        with self.current():
            return self._mem_info()

    def _mem_info(self) -> tuple[int, int]:
        raise NotImplementedError


class _PyCuda(Cuda):
    binding = "pycuda"

    def __init__(self, ordinal: int) -> None:
        self.drv: Any = importlib.import_module("pycuda.driver")
        self.drv.init()
        dev = self.drv.Device(ordinal)
        self.device_name = str(dev.name())
        major, minor = dev.compute_capability()
        self.compute_capability = f"{major}.{minor}"
        self._ctx = dev.retain_primary_context()

    def push(self) -> None:
        self._ctx.push()

    def pop(self) -> None:
        self.drv.Context.pop()

    def stream(self) -> Any:
        return self.drv.Stream()

    def handle(self, obj: Any) -> int:
        return int(obj.handle) if hasattr(obj, "handle") else int(obj)

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        arr: np.ndarray = self.drv.pagelocked_empty(shape, dtype)
        return arr

    def alloc(self, nbytes: int) -> Any:
        return self.drv.mem_alloc(max(1, nbytes))

    def free(self, mem: Any) -> None:
        mem.free()

    def to_device(self, dst: Any, src: np.ndarray, stream: Any) -> None:
        self.drv.memcpy_htod_async(dst, src, stream)

    def to_host(self, dst: np.ndarray, src: Any, stream: Any) -> None:
        self.drv.memcpy_dtoh_async(dst, src, stream)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def event(self) -> Any:
        return self.drv.Event()

    def record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        end.synchronize()
        return float(end.time_since(start))

    def _mem_info(self) -> tuple[int, int]:
        free, total = self.drv.mem_get_info()
        return int(free), int(total)


class _CudaPython(Cuda):
    binding = "cuda-python"

    def __init__(self, ordinal: int) -> None:
        self.drv: Any = _driver_module()
        d = self.drv
        try:
            self._check(d.cuInit(0), "cuInit")
        except CudaError:
            raise
        except Exception as exc:  # no driver library at all: cuda.pathfinder raises its own error
            raise CudaError(f"no NVIDIA driver here ({str(exc).splitlines()[0][:160]})") from exc
        dev = self._check(d.cuDeviceGet(ordinal), "cuDeviceGet")
        name = self._check(d.cuDeviceGetName(256, dev), "cuDeviceGetName")
        self.device_name = bytes(name).split(b"\0")[0].decode()
        attr = d.CUdevice_attribute
        major = self._check(d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cc")
        minor = self._check(d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cc")
        self.compute_capability = f"{major}.{minor}"
        self._ctx = self._check(d.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")

    def _check(self, result: Any, what: str) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, name = self.drv.cuGetErrorName(err)
            raise CudaError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def push(self) -> None:
        self._check(self.drv.cuCtxPushCurrent(self._ctx), "cuCtxPushCurrent")

    def pop(self) -> None:
        self._check(self.drv.cuCtxPopCurrent(), "cuCtxPopCurrent")

    def stream(self) -> Any:
        flags = int(self.drv.CUstream_flags.CU_STREAM_NON_BLOCKING)
        return self._check(self.drv.cuStreamCreate(flags), "cuStreamCreate")

    def handle(self, obj: Any) -> int:
        return int(obj)

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        dt = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape)) * dt.itemsize)
        ptr = int(self._check(self.drv.cuMemHostAlloc(nbytes, 0), "cuMemHostAlloc"))
        raw = (ctypes.c_byte * nbytes).from_address(ptr)
        # the array keeps ``raw`` alive through its base; ``raw`` keeps the owner, which frees the block
        raw._owner = _PinnedOwner(self, ptr)  # type: ignore[attr-defined]
        return np.frombuffer(memoryview(raw), dtype=dt, count=int(np.prod(shape))).reshape(shape)

    def alloc(self, nbytes: int) -> Any:
        return self._check(self.drv.cuMemAlloc(max(1, nbytes)), "cuMemAlloc")

    def free(self, mem: Any) -> None:
        self._check(self.drv.cuMemFree(mem), "cuMemFree")

    def to_device(self, dst: Any, src: np.ndarray, stream: Any) -> None:
        self._check(self.drv.cuMemcpyHtoDAsync(dst, src.ctypes.data, src.nbytes, stream), "cuMemcpyHtoDAsync")

    def to_host(self, dst: np.ndarray, src: Any, stream: Any) -> None:
        self._check(self.drv.cuMemcpyDtoHAsync(dst.ctypes.data, src, dst.nbytes, stream), "cuMemcpyDtoHAsync")

    def synchronize(self, stream: Any) -> None:
        self._check(self.drv.cuStreamSynchronize(stream), "cuStreamSynchronize")

    def event(self) -> Any:
        return self._check(self.drv.cuEventCreate(0), "cuEventCreate")

    def destroy(self, stream_or_event: Any) -> None:
        if isinstance(stream_or_event, self.drv.CUstream):
            self._check(self.drv.cuStreamDestroy(stream_or_event), "cuStreamDestroy")
        elif isinstance(stream_or_event, self.drv.CUevent):
            self._check(self.drv.cuEventDestroy(stream_or_event), "cuEventDestroy")

    def record(self, event: Any, stream: Any) -> None:
        self._check(self.drv.cuEventRecord(event, stream), "cuEventRecord")

    def elapsed_ms(self, start: Any, end: Any) -> float:
        self._check(self.drv.cuEventSynchronize(end), "cuEventSynchronize")
        return float(self._check(self.drv.cuEventElapsedTime(start, end), "cuEventElapsedTime"))

    def _mem_info(self) -> tuple[int, int]:
        free, total = self._check(self.drv.cuMemGetInfo(), "cuMemGetInfo")
        return int(free), int(total)


class _PinnedOwner:
    def __init__(self, cuda: _CudaPython, ptr: int) -> None:
        self.cuda, self.ptr = cuda, ptr

    def __del__(self) -> None:
        try:
            self.cuda.drv.cuMemFreeHost(self.ptr)
        except Exception:  # interpreter shutdown: the driver frees it with the process
            pass


_OPEN: dict[tuple[str, int], Cuda] = {}
# cuda-python's driver API: cuda.bindings.driver from 12.6.1; cuda.cuda before (the newest
# cuda-python for Python 3.8, JetPack 5's Python, is 12.3), the same functions and names
_DRIVER_MODULES = ("cuda.bindings.driver", "cuda.cuda")


def _driver_module() -> Any:
    for module in _DRIVER_MODULES:
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    raise ImportError("cuda-python is not installed")


def available() -> list[str]:
    """The CUDA bindings importable here, in preference order."""
    out = []
    for name, load in (("pycuda", lambda: importlib.import_module("pycuda.driver")), ("cuda-python", _driver_module)):
        try:
            load()
        except ImportError:
            continue
        out.append(name)
    return out


def open_cuda(binding: str | None = None, ordinal: int = 0) -> Cuda:
    """The device's primary context through ``binding`` (default: pycuda, then cuda-python)."""
    if binding is not None and binding not in BINDINGS:
        raise CudaError(f"unknown CUDA binding {binding!r}; choose from {', '.join(BINDINGS)}")
    have = available()
    names = [binding] if binding else have
    if not names or (binding and binding not in have):
        raise MissingDependencyError(
            f"no CUDA binding for Python ({binding or 'pycuda or cuda-python'}) is installed; "
            'pip install "edgekit[gpu]" (cuda-python), or pycuda from JetPack'
        )
    name = names[0]
    key = (name, ordinal)
    if key not in _OPEN:
        _OPEN[key] = _PyCuda(ordinal) if name == "pycuda" else _CudaPython(ordinal)
    return _OPEN[key]
