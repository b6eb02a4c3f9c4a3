"""The TensorRT runner's own logic, with the GPU replaced by host memory (there is no GPU here).

What is fake, and why: CUDA (no device: "device" memory is host memory, copies are memcpy) and
TensorRT (a Runtime must never be made without a GPU): tests/trt/fake.py, whose builder and
runtime refuse what each TensorRT version refuses. The fake engine runs the bundle's real ONNX
model with ONNX Runtime, reading its input from and writing its output to the raw addresses the
runner hands it with ``set_tensor_address``, as TensorRT does. So this checks the runner's
buffers, shapes, addresses, copies, per-thread contexts and clean-up, and edgekit build ->
manifest -> runner end to end; the real thing is checked by tests/gpu (make test-gpu) on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.images import read_image, sample_images
from edgekit.profiles import Batch
from edgekit.runtime import loader
from edgekit.trt import runner as trt_runner
from tests.threads import run_threads
from tests.trt.fake import HostCuda, fake_tensorrt, plan_bytes


def make_runner(onnx_path, tmp_path, monkeypatch, version="10.3.0", plan=None, entry=None):
    """A runner on the fake TensorRT ``version``; ``plan``: a fake plan's fields (tests/trt/fake.py)."""
    cuda = HostCuda()
    fake = fake_tensorrt(version, cuda)
    monkeypatch.setattr(trt_runner, "load_trt", lambda prefer=None: fake)
    (tmp_path / "e.plan").write_bytes(plan_bytes(onnx_path, version, **(plan or {})))
    r = trt_runner.TrtRunner(tmp_path / "e.plan", {"trt_flavour": "tensorrt", **(entry or {})}, cuda=cuda)
    return r, fake, cuda


@pytest.fixture()
def runner(googlenet_bundle, tmp_path, monkeypatch):
    r, fake, cuda = make_runner(googlenet_bundle / "model.onnx", tmp_path, monkeypatch)
    yield r, fake, cuda
    r.close()


def test_runner_matches_onnxruntime_across_batch_changes(runner, googlenet_bundle):
    r, _, cuda = runner
    with loader.load(googlenet_bundle, backend="onnxruntime", precision="fp32") as clf:
        frames = [clf.prepare(read_image(p)) for p in sample_images()]
        for batch in (1, 3, 1, 4):
            x = np.stack((frames * 2)[:batch])
            got, want = r.infer(x), clf.runner.infer(x)
            assert got.shape == (batch, 1000) and np.array_equal(got, want)
    assert r.last_device_ms is not None
    assert "no GPU (test)" in r.description and "sm_89" in r.description
    assert len(cuda.live) == 2  # only the current batch's input and output buffers are held


def test_a_changing_batch_reuses_the_buffers(googlenet_bundle, tmp_path, monkeypatch):
    """Many cameras make the batch change every call: the buffers are allocated once, at the
    engine's recorded maximum, and each call only sets the input shape and copies its rows."""
    r, _, cuda = make_runner(googlenet_bundle / "model.onnx", tmp_path, monkeypatch,
                             entry={"batch": {"min": 1, "opt": 4, "max": 8}})
    with r, loader.load(googlenet_bundle, backend="onnxruntime", precision="fp32") as clf:
        frames = [clf.prepare(read_image(p)) for p in sample_images()]
        for batch in (1, 3, 2, 8, 4, 1):
            x = np.stack((frames * 4)[:batch])
            assert np.array_equal(r.infer(x), clf.runner.infer(x))
        assert r.allocations == 1 and len(cuda.live) == 2
        assert (r.min_batch, r.max_batch) == (1, 8)


def _frames(bundle):
    with loader.load(bundle, backend="onnxruntime", precision="fp32") as clf:
        return [clf.prepare(read_image(p)) for p in sample_images()]


@pytest.mark.parametrize("version,plan,entry,most", [
    ("10.3.0", {}, {}, 6),  # contexts share profile 0: one per concurrent call (6 threads)
    ("8.6.1", {"profile_sharing": True}, {"profile_sharing": True}, 6),  # built with PROFILE_SHARING_0806
    ("8.6.1", {}, {}, 1),  # an 8.6 plan built without it: one context, calls take turns
    ("8.5.2", {"profiles": [(1, 4, 8)] * 2}, {"profiles": 2}, 2),  # JetPack 5: one profile per context
    ("8.5.2", {"profiles": [(1, 1, 1)]}, {"profiles": 1}, 1),  # a fixed batch (DLA): one profile, calls take turns
], ids=["trt10", "trt8.6-shared", "trt8.6-unshared", "trt8.5-two-profiles", "trt8.5-fixed-batch"])
def test_any_thread_may_classify_on_every_version(googlenet_bundle, tmp_path, monkeypatch, version, plan, entry,
                                                   most):
    r, fake, cuda = make_runner(googlenet_bundle / "model.onnx", tmp_path, monkeypatch, version, plan, entry)
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
    r, fake, _ = make_runner(googlenet_bundle / "model.onnx", tmp_path, monkeypatch, "10.3.0",
                             {"version_compatible": True}, {"version_compatible": True})
    assert r.infer(np.stack(_frames(googlenet_bundle)[:1])).shape == (1, 1000)
    assert fake.runtimes[0].engine_host_code_allowed
    r.close()


def test_batch_outside_the_profile_says_how_to_rebuild(runner):
    r, _, _ = runner
    with pytest.raises(Exception, match="--batch MIN:OPT:MAX"):
        r.infer(np.zeros((9, 224, 224, 3), np.uint8))


# ------------------------------------------------------------------ built here, loaded here
# edgekit build on the fake TensorRT -> manifest -> loader.load(backend="tensorrt): no
# hand-written manifest entries; what the builder applied is what the runtime acts on.


@pytest.fixture()
def device(monkeypatch, tmp_path):
    """This machine poses as ``profile`` with the fake TensorRT ``version`` and a host-memory GPU."""
    from tests.trt.fake import pose_as

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))

    def pose(version: str, profile: str, cc: str):
        return pose_as(monkeypatch, version, profile, cc)

    return pose


def _bundle(googlenet_bundle, tmp_path):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(googlenet_bundle, b)
    return b


def test_a_version_compatible_engine_built_here_loads_here_and_later(googlenet_bundle, tmp_path, device):
    """The manifest records the flags the plan was built with; the runner allows its host code."""
    from edgekit.trt.engine import EngineRequest, build

    b = _bundle(googlenet_bundle, tmp_path)
    fake, _ = device("10.3.0", "desktop-ada", "8.9")
    res = build(EngineRequest(b, precision="fp32", profile="desktop-ada", version_compatible=True))
    assert res.entry["version_compatible"] is True and res.entry["hardware_compatible"] is False
    frames = [read_image(p) for p in sample_images()]
    with loader.load(b, backend="tensorrt") as clf, \
            loader.load(b, backend="onnxruntime", precision="fp32") as ref:
        assert clf.runner.backend == "tensorrt"
        assert [p.indices[0] for p in clf.classify_batch(frames)] == [p.indices[0] for p in ref.classify_batch(frames)]
    assert not fake.errors, fake.errors
    later, _ = device("10.8.0", "desktop-ada", "8.9")  # a later 10.x runtime: forward within the major
    with loader.load(b, backend="tensorrt") as clf:
        clf.classify(frames[0])
    assert later.runtimes[0].engine_host_code_allowed and not later.errors


def test_a_plain_engine_is_not_marked_version_compatible(googlenet_bundle, tmp_path, device):
    from edgekit.trt.engine import EngineRequest, build
    from edgekit.trt.runner import EngineMismatch

    b = _bundle(googlenet_bundle, tmp_path)
    device("10.3.0", "desktop-ada", "8.9")
    res = build(EngineRequest(b, precision="fp32", profile="desktop-ada"))
    assert res.entry["version_compatible"] is False
    device("10.8.0", "desktop-ada", "8.9")
    with pytest.raises(EngineMismatch, match="only loads in the version that built it"):
        loader.load(b, backend="tensorrt")


@pytest.mark.parametrize("version,profile,flag,words", [
    ("8.5.2", "jetson-xavier-nx", "version_compatible", "--version-compatible needs TensorRT 8.6"),
    ("8.5.2", "desktop-ada", "hardware_compatible", "--hardware-compatible needs TensorRT 8.6"),
    ("10.3.0", "jetson-agx-orin", "hardware_compatible", "--hardware-compatible is for desktop GPUs"),
])
def test_compatibility_flags_are_refused_where_they_cannot_apply(googlenet_bundle, tmp_path, device, version,
                                                                 profile, flag, words):
    from edgekit.errors import UsageError
    from edgekit.trt.engine import EngineRequest, build

    b = _bundle(googlenet_bundle, tmp_path)
    device(version, profile, "8.7")
    with pytest.raises(UsageError, match=words) as err:
        build(EngineRequest(b, precision="fp16", profile=profile, **{flag: True}))
    assert "\n" not in str(err.value)
    assert not list((b / "engines").glob("*.plan")) if (b / "engines").exists() else True


def test_a_dla_engine_on_tensorrt_85_has_one_profile(googlenet_bundle, tmp_path, device):
    """DLA takes one static batch (1:1:1); copies of that profile for more contexts would only
    multiply DLA loadables: one profile, one context, calls from any thread take turns."""
    from edgekit.trt.engine import EngineRequest, build

    b = _bundle(googlenet_bundle, tmp_path)
    fake, cuda = device("8.5.2", "jetson-xavier-nx", "7.2")
    res = build(EngineRequest(b, precision="fp16", profile="jetson-xavier-nx", dla=0))
    assert res.entry["profiles"] == 1 and res.entry["batch"] == {"min": 1, "opt": 1, "max": 1}
    gpu = build(EngineRequest(b, precision="fp16", profile="jetson-xavier-nx", batch=Batch(1, 2, 4)))
    assert gpu.entry["profiles"] == 2  # a batch range: one profile per concurrent context
    r = trt_runner.TrtRunner(res.path, res.entry, cuda=cuda)
    frames = _frames(googlenet_bundle)
    out = run_threads(lambda i: [int(r.infer(f[None]).argmax()) for f in frames], n=4)
    assert all(o == out[0] for o in out) and len(fake.contexts) == 1 and not fake.errors, fake.errors
    with pytest.raises(Exception, match="--batch MIN:OPT:MAX"):
        r.infer(np.stack(frames[:2]))  # outside the static batch 1
    r.close()


def test_tensorrt_before_85_is_refused_for_build_and_runtime(googlenet_bundle, tmp_path, device):
    """JetPack 5.0.2 ships TensorRT 8.4.1 (JetPack 4.6: 8.0/8.2): no uint8 input, no execute_async_v3."""
    from edgekit.errors import UsageError
    from edgekit.trt.engine import EngineRequest, build

    b = _bundle(googlenet_bundle, tmp_path)
    device("8.4.1", "jetson-xavier-nx", "7.2")
    with pytest.raises(UsageError, match=r"TensorRT 8\.4\.1.*upgrade to JetPack 5\.1 \(TensorRT 8\.5\.2\).*"
                                         r"edgekit build BUNDLE --profile jetson-nano"):
        build(EngineRequest(b, precision="fp16", profile="jetson-xavier-nx"))
    (tmp_path / "e.plan").write_bytes(plan_bytes(b / "model.onnx", "8.4.1"))
    with pytest.raises(UsageError, match="upgrade to JetPack 5.1"):
        trt_runner.TrtRunner(tmp_path / "e.plan", {"trt_flavour": "tensorrt"}, cuda=HostCuda())


# ------------------------------------------------------------------ the fake refuses what TensorRT refuses


def test_the_fake_refuses_what_tensorrt_refuses(googlenet_bundle, tmp_path):
    onnx_path = googlenet_bundle / "model.onnx"
    # (a) no engine_host_code_allowed before 8.6
    cuda = HostCuda()
    with cuda.current():
        with pytest.raises(AttributeError):
            fake_tensorrt("8.5.2", cuda).Runtime(None).engine_host_code_allowed = True
        fake_tensorrt("8.6.1", cuda).Runtime(None).engine_host_code_allowed = True
    # (c) the 8.4 parser takes no uint8 input; 8.5 does
    for version, ok in (("8.4.1", False), ("8.5.2", True)):
        trt = fake_tensorrt(version)
        net = trt.Builder(None).create_network(1 << trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        parser = trt.OnnxParser(net, None)
        assert parser.parse_from_file(str(onnx_path)) is ok
        if not ok:
            assert "UINT8" in parser.get_error(0).desc()
    # (b) shapes outside the context's own profile, and a static input's other shapes
    fake = fake_tensorrt("8.5.2", cuda)
    with cuda.current():
        e = fake.Runtime(None).deserialize_cuda_engine(plan_bytes(onnx_path, "8.5.2", [(1, 2, 4), (4, 6, 8)]))
        c0, c1 = e.create_execution_context(), e.create_execution_context()
        name = e.get_tensor_name(0)
        assert c1.profile is None and not c1.set_input_shape(name, (1, 224, 224, 3))
        assert c1.set_optimization_profile_async(1, 0)
        assert c0.set_input_shape(name, (4, 224, 224, 3)) and not c0.set_input_shape(name, (5, 224, 224, 3))
        assert c1.set_input_shape(name, (8, 224, 224, 3)) and not c1.set_input_shape(name, (2, 224, 224, 3))
        static = fake.Runtime(None).deserialize_cuda_engine(
            plan_bytes(onnx_path, "8.5.2", [], shape=[1, 224, 224, 3]))
        assert static.get_tensor_shape(name) == [1, 224, 224, 3]
        s = static.create_execution_context()
        assert s.set_input_shape(name, (1, 224, 224, 3)) and not s.set_input_shape(name, (2, 224, 224, 3))
    # (d) no CUDA context current: TensorRT cannot run, select a profile or make a context
    assert not c0.execute_async_v3(0) and not c1.set_optimization_profile_async(0, 0)
    assert e.create_execution_context() is None
    assert any("CUDA_ERROR_INVALID_CONTEXT" in m for m in fake.errors)
    # a plan from another TensorRT version does not deserialise
    with cuda.current():
        assert fake.Runtime(None).deserialize_cuda_engine(plan_bytes(onnx_path, "8.6.1")) is None
    assert "version tag does not match" in fake.errors[-1]


def test_a_version_compatible_entry_on_85_is_refused_before_the_runtime(googlenet_bundle, tmp_path, monkeypatch):
    """TensorRT 8.5's Runtime has no engine_host_code_allowed (AttributeError): say so instead."""
    with pytest.raises(trt_runner.EngineMismatch, match="version-compatible.*8.5.2 cannot load"):
        make_runner(googlenet_bundle / "model.onnx", tmp_path, monkeypatch, "8.5.2", {"version_compatible": True},
                    {"version_compatible": True})


def test_an_entry_from_before_the_flags_were_recorded_is_rebuilt(googlenet_bundle, tmp_path, device):
    """Same cache key, but the runtime cannot tell it was built version-compatible: rebuild, not reuse."""
    import json

    from edgekit.trt.engine import EngineRequest, build

    b = _bundle(googlenet_bundle, tmp_path)
    device("10.3.0", "desktop-ada", "8.9")
    req = EngineRequest(b, precision="fp32", profile="desktop-ada", version_compatible=True)
    build(req)
    data = json.loads((b / "manifest.json").read_text())
    for e in data["engines"]:  # as edgekit wrote it before this change
        del e["version_compatible"], e["hardware_compatible"]
    (b / "manifest.json").write_text(json.dumps(data))
    again = build(req)
    assert not again.reused and again.entry["version_compatible"] is True
    assert build(req).reused
