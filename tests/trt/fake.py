"""A fake TensorRT (builder and runtime) and a host-memory CUDA, for the code that needs a GPU.

There is no GPU here, and a TensorRT Runtime must never be made without one. The fake obeys
the documented rules of the TensorRT version it poses as, and refuses what the real one
refuses, so the builder, the manifest and the runner are tested end to end:

- builder (per version): no uint8 network input before 8.5 (NVIDIA/TensorRT #1503);
  ``builder_optimization_level``, ``hardware_compatibility_level``, ``VERSION_COMPATIBLE`` and
  ``PROFILE_SHARING_0806`` from 8.6; no ``FP16``/``INT8`` flags, calibrators or
  ``max_workspace_size`` from 11 (workspace from 10 is a memory pool); no DLA in 11.0-11.3; an
  explicit-batch network before 10; a dynamic input needs an optimisation profile; DLA takes
  only static shapes (min = opt = max) and no FP32;
- runtime: ``Runtime.engine_host_code_allowed`` exists from 8.6 (setting it before raises
  AttributeError), and a version-compatible plan deserialises only with it; a plan from
  another TensorRT version fails ("version tag does not match");
- optimisation profiles (IExecutionContext docs, 8.x): the first context created takes
  profile 0, later ones none until ``set_optimization_profile_async``; a profile in use by
  another live context is refused ("Profile 0 has been chosen by another IExecutionContext")
  unless profiles are shared (10.0+, or 8.6 with PROFILE_SHARING_0806 set at build time);
- shapes: ``set_input_shape`` takes only shapes inside the context's profile (a static input
  only its own shape); an engine reports -1 only for dynamic dimensions;
- a CUDA context must be current to deserialise, create a context, select a profile and
  execute; a context serves one call at a time.

The engine runs the ONNX model it was built from with ONNX Runtime, reading its input from
and writing its output to the raw addresses handed to ``set_tensor_address``, as TensorRT does.
"""

from __future__ import annotations

import ctypes
import json
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.trt.cuda import Cuda

_ONNX_TYPES = {1: "FLOAT", 2: "UINT8", 10: "HALF"}
_NP = {"FLOAT": np.float32, "UINT8": np.uint8, "HALF": np.float16}


class HostCuda(Cuda):
    binding = "host-memory (test)"
    device_name = "no GPU (test)"
    compute_capability = "8.9"

    def __init__(self) -> None:
        self.live: dict[int, np.ndarray] = {}
        self.depth = threading.local()
        self.streams = 0  # streams and events made and not destroyed (cuda-python does not collect them)

    def is_current(self) -> bool:
        return getattr(self.depth, "n", 0) > 0

    def push(self) -> None:
        self.depth.n = getattr(self.depth, "n", 0) + 1

    def pop(self) -> None:
        self.depth.n -= 1
        assert self.depth.n >= 0

    def stream(self):
        self.streams += 1
        return object()

    def destroy(self, handle) -> None:
        assert self.is_current(), "stream or event destroyed with no context current"
        self.streams -= 1

    def handle(self, obj) -> int:
        return obj.ctypes.data if isinstance(obj, np.ndarray) else id(obj)

    def pinned(self, shape, dtype):
        return np.zeros(shape, dtype)

    def alloc(self, nbytes):
        assert self.is_current(), "device memory allocated with no context current"
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
        assert self.is_current(), "device memory queried with no context current"
        return 1 << 30, 1 << 31


def plan_bytes(onnx_path: str | Path, version: str, profiles: list[tuple[int, int, int]] | None = None,
               shape: list[int] | None = None, **meta: Any) -> bytes:
    """A fake plan for ``onnx_path``, as the fake builder writes it (for runner-only tests)."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    i, o = m.graph.input[0], m.graph.output[0]
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim]
    out = [d.dim_value if d.HasField("dim_value") else -1 for d in o.type.tensor_type.shape.dim]
    data = {"trt_version": version, "onnx": str(onnx_path), "input": i.name, "output": o.name,
            "dtype": _ONNX_TYPES[i.type.tensor_type.elem_type], "shape": shape or dims, "out_shape": out,
            "profiles": [list(p) for p in (profiles if profiles is not None else ([(1, 4, 8)] if -1 in dims else []))],
            "version_compatible": False, "profile_sharing": False, "dla_core": None, **meta}
    return b"plan" + json.dumps(data).encode()


def fake_tensorrt(version: str = "10.3.0", cuda: HostCuda | None = None) -> types.ModuleType:
    """A ``tensorrt`` module posing as ``version``; ``cuda``: whose context must be current."""
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version
    v = tuple(int(x) for x in version.split(".")[:2])
    mod.errors = []  # what TensorRT would have logged as errors
    mod.contexts = []
    mod.runtimes = []

    def need_context(what: str) -> bool:
        if cuda is not None and not cuda.is_current():
            mod.errors.append(f"{what}: CUDA_ERROR_INVALID_CONTEXT (no CUDA context current on this thread)")
            return False
        return True

    # ------------------------------------------------------------------ enums and logging
    mod.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    mod.DataType = types.SimpleNamespace(FLOAT="FLOAT", UINT8="UINT8", HALF="HALF")
    flags = ["GPU_FALLBACK"] + (["FP16", "INT8"] if v < (11, 0) else [])
    flags += ["VERSION_COMPATIBLE"] if v >= (8, 6) else []
    mod.BuilderFlag = types.SimpleNamespace(**{f: f for f in flags})
    ncf = {"EXPLICIT_BATCH": 0} if v < (11, 0) else {}
    if v >= (10, 0):
        ncf["STRONGLY_TYPED"] = 1
    mod.NetworkDefinitionCreationFlag = types.SimpleNamespace(**ncf)
    mod.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    mod.DeviceType = types.SimpleNamespace(GPU="GPU", **({} if (11, 0) <= v < (11, 4) else {"DLA": "DLA"}))
    mod.PreviewFeature = types.SimpleNamespace(**({"PROFILE_SHARING_0806": "PROFILE_SHARING_0806"} if v >= (8, 6)
                                                  else {}))
    if v >= (8, 6):
        mod.HardwareCompatibilityLevel = types.SimpleNamespace(NONE=0, AMPERE_PLUS=1)
    mod.Dims = list

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self) -> None:
            pass

    class Logger(ILogger):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

        def __init__(self, level: int = 2) -> None:
            super().__init__()

        def log(self, severity, msg) -> None:
            pass

    mod.ILogger, mod.Logger = ILogger, Logger
    if v < (11, 0):
        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        mod.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    def _strict(cls: type, since: dict[str, tuple[tuple[int, int], tuple[int, int]]]) -> type:
        """Attributes a version's bindings lack raise AttributeError when set, as pybind11's do."""
        def __setattr__(self, name, value):
            lo, hi = since.get(name, ((0, 0), (99, 0)))
            if not lo <= v < hi:
                raise AttributeError(f"'tensorrt.{cls.__name__}' object has no attribute '{name}'")
            object.__setattr__(self, name, value)

        cls.__setattr__ = __setattr__
        return cls

    # ------------------------------------------------------------------ builder
    class Tensor:
        def __init__(self, name, shape, dtype) -> None:
            self.name, self.shape, self.dtype = name, shape, dtype

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []
            self.meta: dict[str, Any] = {}

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_layers(self) -> int:
            return 1

        def get_input(self, i):
            return self.inputs[i]

    class ParserError:
        def __init__(self, node, desc) -> None:
            self._node, self._desc = node, desc

        def node(self):
            return self._node

        def desc(self):
            return self._desc

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            self.network = network
            self.errors: list[ParserError] = []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

        def parse_from_file(self, path):
            import onnx

            return self._parse(onnx.load(str(path)), str(path))

        def parse(self, data):
            import onnx

            return self._parse(onnx.load_from_string(bytes(data)), None)

        def _parse(self, model, path) -> bool:
            if v < (10, 0) and not self.network.flags & (1 << mod.NetworkDefinitionCreationFlag.EXPLICIT_BATCH):
                self.errors.append(ParserError(-1, "the ONNX parser needs a network with explicit batch"))
                return False
            i, o = model.graph.input[0], model.graph.output[0]
            code = i.type.tensor_type.elem_type
            if code == 2 and v < (8, 5):  # NVIDIA/TensorRT #1503
                self.errors.append(ParserError(0, "Unsupported ONNX data type: UINT8 (2)"))
                return False
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim]
            out = [d.dim_value if d.HasField("dim_value") else -1 for d in o.type.tensor_type.shape.dim]
            self.network.inputs.append(Tensor(i.name, tuple(dims), _ONNX_TYPES[code]))
            if path is None:
                path = f"<memory {len(mod.models)}>"
                mod.models[path] = model.SerializeToString()
            self.network.meta = {"onnx": path, "output": o.name, "out_shape": out}
            return True

    mod.models = {}

    class OptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name, lo, opt, hi) -> None:
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi)), (lo, opt, hi)
            self.shapes[name] = (list(lo), list(opt), list(hi))

    class IBuilderConfig:
        def __init__(self) -> None:
            object.__setattr__(self, "flags_set", set())
            object.__setattr__(self, "profiles", [])
            object.__setattr__(self, "preview", set())
            object.__setattr__(self, "default_device_type", mod.DeviceType.GPU)

        def set_flag(self, flag) -> None:
            self.flags_set.add(flag)

        def set_memory_pool_limit(self, pool, size) -> None:
            pass

        def add_optimization_profile(self, profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_preview_feature(self, feature, on) -> None:
            if on:
                self.preview.add(feature)

        def create_timing_cache(self, data):
            return types.SimpleNamespace(serialize=lambda: b"timing")

        def set_timing_cache(self, cache, ignore_mismatch) -> bool:
            return True

    IBuilderConfig = _strict(IBuilderConfig, {
        "builder_optimization_level": ((8, 6), (99, 0)), "hardware_compatibility_level": ((8, 6), (99, 0)),
        "int8_calibrator": ((0, 0), (11, 0)), "max_workspace_size": ((0, 0), (10, 0)),
    })

    class Builder:
        def __init__(self, logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0):
            return Network(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return OptimizationProfile()

        def build_serialized_network(self, network, config):
            def fail(msg):
                mod.errors.append(msg)
                self.logger.log(ILogger.Severity.ERROR, msg)
                return None

            inp = network.get_input(0)
            ranges = [p.shapes[inp.name] for p in config.profiles if inp.name in p.shapes]
            if -1 in inp.shape and not ranges:
                return fail("Network has dynamic or shape inputs, but no optimization profile has been defined.")
            dla = config.default_device_type == getattr(mod.DeviceType, "DLA", None)
            if dla:
                if any(lo != opt or opt != hi for lo, opt, hi in ranges):
                    return fail("DLA requires static shapes: min, opt and max of every profile must be equal")
                if not config.flags_set & {"FP16", "INT8"} and not (v >= (11, 0)):
                    return fail("DLA does not support FP32: set FP16 or INT8")
            return plan_bytes_for(network, config, dla)

    def plan_bytes_for(network, config, dla) -> bytes:
        inp = network.get_input(0)
        profiles = [[p.shapes[inp.name][k][0] for k in range(3)] for p in config.profiles]
        data = {"trt_version": version, "input": inp.name, "dtype": inp.dtype, "shape": list(inp.shape),
                **network.meta, "profiles": profiles,
                "version_compatible": "VERSION_COMPATIBLE" in config.flags_set,
                "profile_sharing": "PROFILE_SHARING_0806" in config.preview,
                "hardware_compatible": bool(getattr(config, "hardware_compatibility_level", 0)),
                "dla_core": getattr(config, "DLA_core", None) if dla else None}
        return b"plan" + json.dumps(data).encode()

    mod.Builder, mod.OnnxParser, mod.IBuilderConfig = Builder, OnnxParser, IBuilderConfig

    # ------------------------------------------------------------------ runtime
    class Context:
        def __init__(self, engine) -> None:
            self.engine = engine
            self.shape = tuple(engine.plan["shape"]) if -1 not in engine.plan["shape"] else None
            self.addr: dict[str, int] = {}
            self.busy = threading.Lock()
            self.profile = None
            if engine.shared or not engine.created:
                self._take(0)
            engine.created += 1
            mod.contexts.append(self)

        def _take(self, k) -> bool:
            owner = self.engine.owners.get(k)
            if not self.engine.shared and owner is not None and owner is not self:
                mod.errors.append(f"Profile {k} has been chosen by another IExecutionContext")
                return False
            self.engine.owners[k] = self
            self.profile = k
            return True

        def set_optimization_profile_async(self, k, stream) -> bool:
            if not need_context("set_optimization_profile_async"):
                return False
            if not 0 <= k < self.engine.num_optimization_profiles:
                return False
            return self._take(k)

        def set_input_shape(self, name, shape) -> bool:
            plan = self.engine.plan
            assert name == plan["input"]
            shape = tuple(int(s) for s in shape)
            if self.profile is None:  # TensorRT: "no optimization profile has been set"
                mod.errors.append("set_input_shape on a context without an optimization profile")
                return False
            static = tuple(plan["shape"])
            if len(shape) != len(static) or any(s != d for s, d in zip(shape, static) if d != -1):
                mod.errors.append(f"set_input_shape {shape}: the engine's input is {static}")
                return False
            if -1 in static:
                lo, _, hi = plan["profiles"][self.profile]
                if not lo <= shape[0] <= hi:
                    mod.errors.append(f"set_input_shape {shape}: outside profile {self.profile} ({lo}..{hi})")
                    return False
            self.shape = shape
            return True

        def get_tensor_shape(self, name):
            plan = self.engine.plan
            if name == plan["output"]:
                return [self.shape[0] if self.shape else -1, *plan["out_shape"][1:]]
            return list(self.shape) if self.shape else list(plan["shape"])

        def set_tensor_address(self, name, ptr) -> bool:
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream) -> bool:
            if not need_context("execute_async_v3"):
                return False
            if self.shape is None or self.profile is None:
                mod.errors.append("execute_async_v3 without input shapes or an optimization profile")
                return False
            assert self.busy.acquire(blocking=False), "a context used by two calls at once"
            try:
                plan = self.engine.plan
                dt = _NP[plan["dtype"]]
                n = int(np.prod(self.shape))
                x = np.frombuffer((ctypes.c_byte * (n * np.dtype(dt).itemsize)).from_address(self.addr[plan["input"]]),
                                  dtype=dt).reshape(self.shape)
                y = self.engine.session().run([plan["output"]], {plan["input"]: x.copy()})[0].astype(np.float32)
                ctypes.memmove(self.addr[plan["output"]], y.ctypes.data, y.nbytes)
            finally:
                self.busy.release()
            return True

        def __del__(self) -> None:
            for k, owner in list(self.engine.owners.items()):
                if owner is self:
                    del self.engine.owners[k]

    class Engine:
        num_io_tensors = 2

        def __init__(self, plan: dict[str, Any]) -> None:
            self.plan = plan
            # a static engine has one implicit profile
            self.num_optimization_profiles = max(1, len(plan["profiles"]))
            self.owners: dict = {}
            self.created = 0
            self.shared = v >= (10, 0) or (v >= (8, 6) and bool(plan["profile_sharing"]))
            self._session = None
            self._lock = threading.Lock()

        def session(self):
            import onnxruntime as ort

            with self._lock:
                if self._session is None:
                    src = self.plan["onnx"]
                    self._session = ort.InferenceSession(mod.models.get(src, src), providers=["CPUExecutionProvider"])
            return self._session

        def get_tensor_name(self, i):
            return [self.plan["input"], self.plan["output"]][i]

        def get_tensor_mode(self, name):
            return mod.TensorIOMode.INPUT if name == self.plan["input"] else mod.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return types.SimpleNamespace(name=self.plan["dtype"] if name == self.plan["input"] else "FLOAT")

        def get_tensor_shape(self, name):
            if name == self.plan["input"]:
                return list(self.plan["shape"])
            return [self.plan["shape"][0], *self.plan["out_shape"][1:]]

        def create_execution_context(self):
            if not need_context("create_execution_context"):
                return None
            return Context(self)

    class Runtime:
        def __init__(self, logger) -> None:
            if not need_context("Runtime"):
                raise RuntimeError("no CUDA context")
            if v >= (8, 6):
                self.engine_host_code_allowed = False
            self.DLA_core = -1
            mod.runtimes.append(self)

        def deserialize_cuda_engine(self, data):
            if not need_context("deserialize_cuda_engine"):
                return None
            if not data.startswith(b"plan"):
                mod.errors.append("not a plan")
                return None
            plan = json.loads(data[4:])
            if plan["version_compatible"]:
                if not getattr(self, "engine_host_code_allowed", False):
                    mod.errors.append("the plan holds host code: set engine_host_code_allowed")
                    return None
            elif plan["trt_version"] != version:
                mod.errors.append("The engine plan file is not compatible with this version of TensorRT "
                                  f"(version tag does not match: {plan['trt_version']} vs {version})")
                return None
            return Engine(plan)

    Runtime = _strict(Runtime, {"engine_host_code_allowed": ((8, 6), (99, 0))})
    mod.Runtime = Runtime
    return mod


def pose_as(monkeypatch: Any, version: str, profile: str, cc: str) -> tuple[Any, HostCuda]:
    """This process poses as ``profile`` with the fake TensorRT ``version`` and a host-memory GPU of
    compute capability ``cc``: the builder, the parser and the runner all get this fake."""
    from edgekit import profiles as prof_mod
    from edgekit.trt import build as trt_build
    from edgekit.trt import parse as trt_parse
    from edgekit.trt import runner as trt_runner

    cuda = HostCuda()
    cuda.compute_capability = cc
    fake = fake_tensorrt(version, cuda)
    for mod in (trt_parse, trt_build, trt_runner):
        monkeypatch.setattr(mod, "load_trt", lambda prefer=None: fake)
    monkeypatch.setattr(trt_runner, "open_cuda", lambda binding=None: cuda)
    p = prof_mod.get(profile)
    monkeypatch.setattr(prof_mod, "detect", lambda *a, **k: (p, prof_mod.Device(compute_capability=cc)))
    return fake, cuda
