"""Which backend load() picks and why; engines checked against this device before deserialising.

The engine entries are real: built by TensorRT-RTX on this CPU. No GPU exists here, so the
"GPU present" cases describe one (profile and compute capability) to detection; CUDA itself
then really fails to start, and load() must fall back without touching TensorRT's Runtime.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("tensorrt_rtx")

from edgekit import manifest as mf  # noqa: E402
from edgekit import profiles as prof_mod  # noqa: E402
from edgekit.errors import UsageError  # noqa: E402
from edgekit.profiles import Batch  # noqa: E402
from edgekit.runtime import classifier, loader  # noqa: E402
from edgekit.trt.engine import EngineRequest, build  # noqa: E402
from edgekit.trt.runner import EngineMismatch, Here, check_engine, pick_engine  # noqa: E402
from tests.cli.test_cli import run as run_cli  # noqa: E402


@pytest.fixture(scope="module")
def engine_bundle(googlenet_bundle, tmp_path_factory) -> Path:
    b = tmp_path_factory.mktemp("eng") / "b"
    shutil.copytree(googlenet_bundle, b)
    import os

    os.environ.setdefault("EDGEKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    build(EngineRequest(b, precision="fp32", profile="desktop-ada", prefer="tensorrt_rtx", batch=Batch(1, 1, 2)))
    return b


def _entry(b: Path) -> dict:
    return dict(mf.read(b).engines[0])


def _here(b: Path, **kw) -> Here:
    e = _entry(b)
    base = {"flavour": e["trt_flavour"], "trt_version": e["trt_version"], "compute_capability": "8.9",
            "profile": "desktop-ada"}
    base.update(kw)
    return Here(**base)


def test_matching_engine_passes(engine_bundle):
    e = _entry(engine_bundle)
    assert e["trt_flavour"] == "tensorrt_rtx" and e["compute_capability"] == "8.9"
    check_engine(e, _here(engine_bundle), engine_bundle)


@pytest.mark.parametrize("change, words", [
    ({"flavour": "tensorrt", "trt_version": "10.3.0"}, "built with tensorrt_rtx"),
    ({"trt_version": "0.9.0"}, "only loads in the version that built it"),
    ({"compute_capability": "8.7", "profile": "jetson-orin-nano"}, "compute capability 8.9"),
])
def test_mismatch_says_which_build_fixes_it(engine_bundle, change, words):
    with pytest.raises(EngineMismatch) as err:
        check_engine(_entry(engine_bundle), _here(engine_bundle, **change), engine_bundle)
    msg = str(err.value)
    assert words in msg and f"edgekit build {engine_bundle} --fp32" in msg
    assert "\n" not in msg


def test_exact_version_rule_for_full_tensorrt():
    e = {"path": "engines/x.plan", "precision": "int8", "trt_flavour": "tensorrt", "trt_version": "10.3.0.30",
         "compute_capability": "8.7", "device": "jetson-orin-nano"}
    here = Here("tensorrt", "10.3.0.26", "8.7", "jetson-orin-nano")
    with pytest.raises(EngineMismatch, match="--int8 --profile jetson-orin-nano"):
        check_engine(e, here, Path("b"))
    # version-compatible plans (8.6+) load in later TensorRT releases: within the major version,
    # and the documented pairs (8.6 on 10.x, 10.x on 11.x); never an earlier one
    with pytest.raises(EngineMismatch):
        check_engine(e | {"version_compatible": True}, here, Path("b"))  # here is older than the builder
    check_engine(e | {"version_compatible": True, "trt_version": "10.3.0.26"},
                 Here("tensorrt", "10.14.1", "8.7"), Path("b"))
    check_engine(e | {"version_compatible": True, "trt_version": "8.6.1"}, Here("tensorrt", "10.3.0", "8.7"),
                 Path("b"))
    check_engine(e | {"version_compatible": True}, Here("tensorrt", "11.4.1", "8.7"), Path("b"))
    with pytest.raises(EngineMismatch):
        check_engine(e | {"version_compatible": True, "trt_version": "8.6.1"}, Here("tensorrt", "11.4.1", "8.7"),
                     Path("b"))
    check_engine(e, Here("tensorrt", "10.3.0.30", "8.7"), Path("b"))
    check_engine(e | {"hardware_compatible": True}, Here("tensorrt", "10.3.0.30", "8.6"), Path("b"))


def test_pick_engine_prefers_this_device_and_fast_precision():
    engines = ({"path": "a", "precision": "fp32", "device": "jetson-orin-nano", "compute_capability": "8.7"},
               {"path": "b", "precision": "int8", "device": "jetson-orin-nano", "compute_capability": "8.7"},
               {"path": "c", "precision": "int8", "device": "jetson-orin-nano", "compute_capability": "8.7",
                "dla_core": 0},
               {"path": "d", "precision": "int8", "device": "desktop-ada", "compute_capability": "8.9"})
    here = Here("tensorrt", "10.3", "8.7", "jetson-orin-nano")
    assert pick_engine(engines, "auto", here)["path"] == "b"
    assert pick_engine(engines, "fp32", here)["path"] == "a"
    assert pick_engine(engines, "int8", Here("tensorrt", "10.3", "8.9", ""))["path"] == "d"
    assert pick_engine(engines, "fp16", here) is None


def test_cpu_machine_falls_back_and_says_why(engine_bundle):
    with loader.load(engine_bundle) as clf:
        # the CPU path measured fastest here: ONNX Runtime or OpenVINO FP32, a close race either may win
        assert clf.backend in ("onnxruntime", "openvino") and clf.precision == "fp32"
        assert clf.why.startswith("no NVIDIA GPU or Jetson detected, so no TensorRT; "), clf.why
    with pytest.raises(UsageError, match="no NVIDIA GPU"):
        loader.load(engine_bundle, backend="tensorrt")
    err = run_cli(["classify", str(engine_bundle), "--backend", "tensorrt"], expect=2).stderr
    assert "no NVIDIA GPU" in err and len(err.strip().splitlines()) == 1


def test_gpu_described_but_cuda_absent_falls_back_before_tensorrt_runtime(engine_bundle, monkeypatch):
    ada = prof_mod.get("desktop-ada")
    dev = prof_mod.Device(gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9")
    monkeypatch.setattr(prof_mod, "detect", lambda root=Path("/"): (ada, dev))
    import edgekit.trt.cuda as cuda_mod

    if "cuda-python" not in cuda_mod.available():
        pytest.skip("cuda-python not installed")
    clf = loader.load(engine_bundle, precision="fp32")
    try:
        assert clf.backend == "onnxruntime"
        assert "no NVIDIA driver" in clf.why  # CUDA tried for real; TensorRT's Runtime never made
    finally:
        clf.close()


def test_engine_for_another_gpu_falls_back_with_the_fix(engine_bundle, monkeypatch):
    orin = prof_mod.get("jetson-orin-nano")
    monkeypatch.setattr(prof_mod, "detect", lambda root=Path("/"): (orin, prof_mod.Device(model="Orin Nano")))
    with loader.load(engine_bundle, precision="fp32") as clf:
        assert clf.backend == "onnxruntime"
        assert "compute capability 8.9" in clf.why and "--profile jetson-orin-nano" in clf.why
        assert clf.runner.description.endswith("5 threads)") or "threads" in clf.runner.description
    with pytest.raises(EngineMismatch):
        loader.load(engine_bundle, backend="tensorrt", precision="fp32")


def test_profile_threads_cap_at_this_machine(monkeypatch):
    orin = prof_mod.get("jetson-agx-orin")
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert orin.cpu_threads == 8
    assert loader.profile_threads(orin) == 3


def test_onnxruntime_tensorrt_provider_caches_its_engines(tmp_path, monkeypatch):
    """onnxruntime-gpu (JetPack's wheel) stands in here, by its provider list: the TensorRT provider
    must be given an engine cache, or every start on a Jetson rebuilds its engines for minutes."""
    import onnxruntime as ort

    from edgekit.runners import ort as ort_runner

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    seen = {}

    class Session:
        def __init__(self, source, sess_options=None, providers=None) -> None:
            seen["providers"] = providers

        def get_inputs(self):
            return [type("I", (), {"name": "input"})()]

        def get_outputs(self):
            return [type("O", (), {"name": "logits"})()]

    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", Session)
    ort_runner.OrtRunner(b"model", providers=["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                               "CPUExecutionProvider"])
    trt, cuda, cpu = seen["providers"]
    assert trt[0] == "TensorrtExecutionProvider" and trt[1]["trt_engine_cache_enable"] == "True"
    assert Path(trt[1]["trt_engine_cache_path"]).is_dir() and str(tmp_path) in trt[1]["trt_engine_cache_path"]
    assert (cuda, cpu) == ("CUDAExecutionProvider", "CPUExecutionProvider")


@pytest.mark.parametrize("version,timing_path", [("1.16.3", False), ("1.17.0", True), ("1.22.0", True)])
def test_tensorrt_provider_options_fit_the_installed_onnxruntime(tmp_path, monkeypatch, version, timing_path):
    """trt_timing_cache_path exists from ONNX Runtime 1.17 (microsoft/onnxruntime #17865): on 1.16 (the
    floor) the provider refuses it ("Invalid TensorRT EP option") and the session silently falls back;
    there the timing cache goes with the engines (trt_engine_cache_path)."""
    import onnxruntime as ort

    from edgekit.runners import ort as ort_runner

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(ort, "__version__", version)
    opts = ort_runner.trt_provider_options()
    assert ("trt_timing_cache_path" in opts) is timing_path
    assert opts["trt_engine_cache_enable"] == opts["trt_timing_cache_enable"] == "True"
    assert Path(opts["trt_engine_cache_path"]).is_dir()


class _ProfileRange:
    """Stands in for a TensorRT engine built with --batch 4:4:8 (no GPU here): TensorRT refuses an input
    shape outside the optimization profile's [min, max] (IExecutionContext.set_input_shape returns
    False); the real model behind it is the bundle's ONNX file on ONNX Runtime."""

    backend, description, min_batch, max_batch = "tensorrt", "stand-in engine 4:4:8", 4, 8

    def __init__(self, onnx_file: Path) -> None:
        from edgekit.runners.ort import OrtRunner

        self.ort, self.calls = OrtRunner(onnx_file, threads=2), []

    def infer(self, x):
        self.calls.append(len(x))
        if not self.min_batch <= len(x) <= self.max_batch:
            raise AssertionError(f"batch {len(x)} is outside the engine's profile 4..8")
        return self.ort.infer(x)

    def close(self) -> None:
        self.ort.close()


def test_classify_takes_any_number_of_frames_on_an_engine_with_a_batch_range(googlenet_bundle):
    import numpy as np

    man = mf.read(googlenet_bundle)
    runner = _ProfileRange(googlenet_bundle / "model.onnx")
    with classifier.Classifier(googlenet_bundle, man, runner, "fp32", "stand-in") as clf:
        frames = [np.full((90, 120, 3), 20 * i, np.uint8) for i in range(11)]
        one = clf.classify(frames[3])
        eleven = clf.classify_batch(frames)
        assert runner.calls == [4, 8, 4]  # one padded to 4; eleven as 8 and 3 padded to 4
        assert eleven[3].indices == one.indices and len(eleven) == 11


def test_a_jetson_no_profile_names_keeps_its_path_and_a_raspberry_pi_is_a_cpu(googlenet_bundle, monkeypatch):
    """A Jetson edgekit has no profile for is still a GPU board: ONNX Runtime as before (its GPU
    providers where installed), no CPU-path measurement; a Raspberry Pi has a device tree too and
    is a CPU like any other."""
    from edgekit.runners import openvino
    from edgekit.runtime import cpu_choice

    monkeypatch.setattr(openvino, "capabilities", lambda: frozenset({"FP32", "INT8"}))  # as if OpenVINO ran here

    def measured(*a, **k):
        raise LookupError("measured the CPU paths")

    monkeypatch.setattr(cpu_choice, "choose", measured)
    cpu = prof_mod.get("cpu")
    board = prof_mod.Device(model="NVIDIA Jetson Thor Developer Kit", compatible=("nvidia,p3971",), l4t="38.2.0")
    pi = prof_mod.Device(model="Raspberry Pi 5 Model B Rev 1.0", compatible=("raspberrypi,5-model-b", "brcm,bcm2712"))
    monkeypatch.setattr(prof_mod, "detect", lambda root=Path("/"): (cpu, board))
    with loader.load(googlenet_bundle) as clf:
        assert clf.backend == "onnxruntime"
    monkeypatch.setattr(prof_mod, "detect", lambda root=Path("/"): (cpu, pi))
    with pytest.raises(LookupError, match="measured"):
        loader.load(googlenet_bundle)
