"""TensorRT runner (gpu tier): a bundle's engine on this device.

Pinned host buffers, device buffers and a CUDA stream per execution context; async copies and
``execute_async_v3`` (TensorRT 8.5+, the floor); the CUDA context pushed and popped around
every call.

Before anything is deserialised, ``check_engine`` compares the engine's manifest entry
with this TensorRT and this GPU (a plan from another version or GPU fails to deserialise,
or worse), and says which ``edgekit build`` makes the right one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import BundleError, DeviceError, UsageError
from edgekit.trt import compat
from edgekit.trt.cuda import Cuda, open_cuda
from edgekit.trt.parse import load_trt

if TYPE_CHECKING:
    # Names checked against stubs generated from TensorRT's bindings (tests/trt/test_stubs.py);
    # without the stubs they are Any. TensorRT and TensorRT-RTX share this part of the API.
    from tensorrt_rtx import ICudaEngine, IExecutionContext, Runtime


class EngineMismatch(UsageError):
    """The bundle's engine was built for another TensorRT or GPU."""


@dataclass(frozen=True)
class Here:
    """This machine, as far as an engine cares."""

    flavour: str  # "tensorrt" / "tensorrt_rtx"
    trt_version: str
    compute_capability: str  # "8.7"; "" when unknown
    profile: str = ""


def here(trt: Any, profile: Any, device: Any) -> Here:
    """This machine for ``check_engine``: the TensorRT module, the detected profile and device."""
    cc = device.compute_capability or (profile.compute_capability[0] if profile.compute_capability else "")
    return Here(trt.__name__, trt.__version__, cc, profile.name)


def check_engine(entry: dict[str, Any], here: Here, bundle: Path) -> None:
    """Refuse an engine this TensorRT/GPU cannot run, with the ``edgekit build`` that fixes it."""
    fix = (f"rebuild it here: edgekit build {bundle} --{entry.get('precision', 'fp16')}"
           + (f" --profile {here.profile}" if here.profile else ""))
    built_flavour = str(entry.get("trt_flavour", ""))
    built_version = str(entry.get("trt_version", ""))
    if built_flavour != here.flavour:
        raise EngineMismatch(f"{entry['path']} was built with {built_flavour} {built_version}, but this machine has "
                             f"{here.flavour} {here.trt_version}; {fix}")
    if here.flavour == "tensorrt":
        # plans are tied to the exact TensorRT build unless built version-compatible (8.6+), which
        # run forward only, on the runtimes NVIDIA documents (compat.VERSION_COMPATIBLE_RUNTIMES)
        same = built_version == here.trt_version or (
            bool(entry.get("version_compatible"))
            and compat.version_compatible_runs(_release(built_version), _release(here.trt_version)))
    else:
        same = compat.parse_version(built_version) == compat.parse_version(here.trt_version)
    if not same:
        raise EngineMismatch(f"{entry['path']} was built with {built_flavour} {built_version}, this machine has "
                             f"{here.trt_version} (a plan only loads in the version that built it); {fix}")
    built_cc = str(entry.get("compute_capability") or "")
    if built_cc and here.compute_capability and built_cc != here.compute_capability \
            and not entry.get("hardware_compatible"):
        raise EngineMismatch(f"{entry['path']} was built for compute capability {built_cc} "
                             f"({entry.get('device', '?')}), this GPU is {here.compute_capability}; {fix}")


def _release(version: str) -> tuple[int, ...]:
    """'8.6.1.6' -> (8, 6, 1, 6); unreadable parts count as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in version.split("."))


def pick_engine(engines: tuple[dict[str, Any], ...], precision: str | None, here: Here) -> dict[str, Any] | None:
    """The engine for this device: matching profile first, then matching compute capability."""
    cands = [e for e in engines if precision in (None, "auto", e.get("precision"))]
    order = {"int8": 0, "fp16": 1, "fp32": 2}
    cands.sort(key=lambda e: order.get(str(e.get("precision")), 9))
    for e in cands:
        if here.profile and e.get("device") == here.profile and e.get("dla_core") is None:
            return e
    for e in cands:
        if here.compute_capability and str(e.get("compute_capability")) == here.compute_capability \
                and e.get("dla_core") is None:
            return e
    return cands[0] if cands else None


def _dims(d: Any) -> tuple[int, ...]:
    return tuple(int(d[i]) for i in range(len(d)))


_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
       "BOOL": np.bool_, "UINT8": np.uint8}


@dataclass
class _Tensor:
    name: str
    is_input: bool
    dtype: np.dtype[Any]
    shape: tuple[int, ...]  # -1 for the dynamic batch


@dataclass
class _Slot:
    """One execution context with its stream, events and buffers; serves one call at a time."""

    context: IExecutionContext
    profile: int
    stream: Any
    events: tuple[Any, Any]  # start/end of the last call, for device time
    batch: int = 0  # the input shape set now
    capacity: int = 0  # the batch the buffers hold
    host: dict[str, np.ndarray] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)


class TrtRunner:
    """A bundle's engine on this GPU; any thread may call ``infer``.

    Calls borrow an execution context from a pool instead of keeping one per thread: nothing
    is left behind when a thread ends, and where contexts cannot share an optimisation profile
    (TensorRT 8.5, and 8.6 without the preview feature) each context takes its own profile
    and callers beyond the number of profiles wait for a free context.
    """

    backend = "tensorrt"

    def __init__(self, plan: str | Path, entry: dict[str, Any] | None = None, binding: str | None = None,
                 cuda: Cuda | None = None) -> None:
        entry = entry or {}
        self.trt: Any = load_trt(entry.get("trt_flavour") or None)
        self.features = compat.features(self.trt.__name__, self.trt.__version__)
        if entry.get("version_compatible") and not self.features.version_compatible:
            # Runtime.engine_host_code_allowed exists from 8.6 only, as do version-compatible plans
            raise EngineMismatch(f"{plan} is marked version-compatible, which {self.trt.__name__} "
                                 f"{self.trt.__version__} cannot load; rebuild it here with edgekit build")
        self.cuda = cuda or open_cuda(binding)
        self.plan = Path(plan)
        data = self.plan.read_bytes()
        self._cond = threading.Condition()
        self._slots: list[_Slot] = []
        self._free: list[_Slot] = []
        self._closed = False
        self.last_device_ms: float | None = None  # copies + inference of the last call, from CUDA events
        logger = self.trt.Logger(self.trt.Logger.WARNING)
        with self.cuda.current():
            self.runtime: Runtime = self.trt.Runtime(logger)
            if entry.get("version_compatible"):
                # a version-compatible plan carries its own lean runtime, which runs only when allowed
                legacy_rt: Any = self.runtime
                legacy_rt.engine_host_code_allowed = True
            if entry.get("dla_core") is not None:
                self.runtime.DLA_core = int(entry["dla_core"])
            self.engine: ICudaEngine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BundleError(f"TensorRT could not deserialise {self.plan} (see the lines above); "
                              "rebuild it on this device with edgekit build")
        self.tensors = self._tensors()
        self.inputs = [t for t in self.tensors if t.is_input]
        self.outputs = [t for t in self.tensors if not t.is_input]
        if len(self.inputs) != 1:
            raise BundleError(f"{self.plan} has {len(self.inputs)} inputs; edgekit engines have one")
        legacy: Any = self.engine
        self.profiles = int(getattr(legacy, "num_optimization_profiles", 1) or 1)
        # contexts may all use profile 0 with static shapes, on TensorRT 10+, or on 8.6 when the
        # engine was built with PROFILE_SHARING_0806; otherwise one profile per context
        self.sharing = (self.inputs[0].shape[0] != -1 or self.features.profile_sharing == "default"
                        or (self.features.profile_sharing == "preview" and bool(entry.get("profile_sharing"))))
        self.max_contexts = None if self.sharing else self.profiles
        first = self.inputs[0].shape[0]  # a static batch, else the profile's range the build recorded
        rng = entry.get("batch") or {}
        self.max_batch: int | None = first if first > 0 else rng.get("max")
        self.min_batch: int = first if first > 0 else int(rng.get("min") or 1)
        self.allocations = 0  # buffer sets allocated, all contexts together
        self.description = (f"{self.trt.__name__} {self.trt.__version__} on {self.cuda.device_name} "
                            f"(sm_{self.cuda.compute_capability.replace('.', '')}, {self.cuda.binding})")

    def _tensors(self) -> list[_Tensor]:
        e = self.engine
        out = []
        for i in range(e.num_io_tensors):
            name = e.get_tensor_name(i)
            is_in = e.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT
            out.append(_Tensor(name, is_in, np.dtype(_NP[e.get_tensor_dtype(name).name]),
                               _dims(e.get_tensor_shape(name))))
        return out

    def _acquire(self) -> _Slot:
        """A free context; a new one if the engine allows another, else the next one released."""
        with self._cond:
            while True:
                if self._closed:
                    raise DeviceError(f"{self.plan.name}: the TensorRT runner was closed")
                if self._free:
                    return self._free.pop()
                if self.max_contexts is None or len(self._slots) < self.max_contexts:
                    slot = self._new_slot(len(self._slots))
                    self._slots.append(slot)
                    return slot
                self._cond.wait()

    def _give_back(self, slot: _Slot) -> None:
        with self._cond:
            if slot in self._slots:
                self._free.append(slot)
            self._cond.notify()

    def _new_slot(self, index: int) -> _Slot:
        stream = self.cuda.stream()
        context = self.engine.create_execution_context()
        if context is None:
            self.cuda.destroy(stream)
            raise DeviceError(f"TensorRT could not create an execution context for {self.plan.name} "
                              "(out of GPU memory?)")
        profile = 0 if self.sharing else index
        if not self.sharing:
            if not context.set_optimization_profile_async(profile, self.cuda.handle(stream)):
                self.cuda.destroy(stream)
                raise DeviceError(f"{self.plan.name}: TensorRT refused optimisation profile {profile} for a new "
                                  "execution context; rebuild the engine here (edgekit build --rebuild)")
            self.cuda.synchronize(stream)
        return _Slot(context, profile, stream, (self.cuda.event(), self.cuda.event()))

    def _buffers(self, st: _Slot, batch: int) -> None:
        """Input shape and buffers for ``batch`` images. Buffers are allocated once, for the
        engine's largest batch (or the largest seen, where no maximum is recorded), and never
        shrink: a batch that changes from call to call (many cameras) only sets the input shape,
        never a cudaFree/cudaMalloc and pinned allocation per call."""
        if st.batch == batch:
            return
        inp = self.inputs[0]
        ctx = st.context

        def shape_to(n: int) -> None:
            if not ctx.set_input_shape(inp.name, (n,) + inp.shape[1:]):
                raise UsageError(f"batch {n} is outside this engine's profile; "
                                 "rebuild with edgekit build --batch MIN:OPT:MAX")

        if batch > st.capacity:
            self._free_buffers(st)
            cap = max(batch, self.max_batch or 0)
            shape_to(cap)  # the outputs' shapes at that batch
            for t in self.tensors:
                tshape = (cap,) + inp.shape[1:] if t.is_input else _dims(ctx.get_tensor_shape(t.name))
                st.host[t.name] = self.cuda.pinned(tshape, t.dtype)
                st.device[t.name] = self.cuda.alloc(st.host[t.name].nbytes)
                ctx.set_tensor_address(t.name, self.cuda.handle(st.device[t.name]))
            st.capacity = cap
            self.allocations += 1
        shape_to(batch)
        st.batch = batch

    def _free_buffers(self, st: _Slot) -> None:
        for mem in st.device.values():
            self.cuda.free(mem)
        st.device.clear()
        st.host.clear()
        st.batch = st.capacity = 0

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        return self.infer_all(inputs)[self.outputs[0].name]

    def infer_all(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        with self.cuda.current():
            st = self._acquire()
            try:
                return self._run(st, inputs)
            finally:
                self._give_back(st)

    def _run(self, st: _Slot, inputs: np.ndarray) -> dict[str, np.ndarray]:
        inp = self.inputs[0]
        n = int(inputs.shape[0])
        self._buffers(st, n)
        host_in = st.host[inp.name][:n]  # the rows in use: a batch below the buffers' capacity
        np.copyto(host_in, inputs, casting="same_kind")
        self.cuda.record(st.events[0], st.stream)
        self.cuda.to_device(st.device[inp.name], host_in, st.stream)
        sh = self.cuda.handle(st.stream)
        if not st.context.execute_async_v3(sh):
            raise DeviceError(f"TensorRT failed to run {self.plan.name} (see the lines above)")
        for t in self.outputs:
            self.cuda.to_host(st.host[t.name][:n], st.device[t.name], st.stream)
        self.cuda.record(st.events[1], st.stream)
        self.cuda.synchronize(st.stream)
        self.last_device_ms = self.cuda.elapsed_ms(*st.events)
        return {t.name: np.array(st.host[t.name][:n]) for t in self.outputs}

    def close(self) -> None:
        """Free every context, buffer, stream and event; calls still waiting for a context fail."""
        with self._cond:
            slots, self._slots, self._free = self._slots, [], []
            self._closed = True
            self._cond.notify_all()
        if slots:
            with self.cuda.current():
                for st in slots:
                    self._free_buffers(st)
                    for handle in (st.stream, *st.events):
                        self.cuda.destroy(handle)
                    del st.context

    def __enter__(self) -> TrtRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
