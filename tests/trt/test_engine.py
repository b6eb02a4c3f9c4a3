"""Engine builds through `edgekit build` with TensorRT-RTX on the CPU: cache, refusals, failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

pytest.importorskip("tensorrt_rtx")
pytest.importorskip("torch")

from edgekit import manifest as mf  # noqa: E402
from edgekit.cli import cli  # noqa: E402
from edgekit.errors import UsageError  # noqa: E402
from edgekit.profiles import Batch  # noqa: E402
from edgekit.trt.build import BuildError, build_engine  # noqa: E402
from edgekit.trt.engine import EngineRequest, build, parse_batch  # noqa: E402


@pytest.fixture()
def bundle(googlenet_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    b = tmp_path / "b"
    shutil.copytree(googlenet_bundle, b)
    from edgekit.quant.quantize import to_fp16

    # an FP16 model, as calibrate would add it (kept out of the manifest check on purpose: added below)
    to_fp16(b / "model.onnx", b / "model.fp16.onnx")
    man = mf.read(b)
    from edgekit.hashing import sha256_file

    art = mf.Artifact("model.fp16.onnx", "onnx", sha256_file(b / "model.fp16.onnx"),
                      (b / "model.fp16.onnx").stat().st_size, "fp16")
    (b / "manifest.json").write_text(man.with_artifact(art).to_json())
    return b


def _req(b: Path, **kw) -> EngineRequest:
    kw.setdefault("profile", "desktop-ada")
    kw.setdefault("prefer", "tensorrt_rtx")
    return EngineRequest(b, **kw)


def test_cache_reuses_and_invalidates(bundle):
    first = build(_req(bundle, precision="fp16", batch=Batch(1, 2, 4)))
    assert not first.reused
    plan = first.path.read_bytes()
    assert not plan.startswith(b"{")  # a plain TensorRT plan, no header of ours
    again = build(_req(bundle, precision="fp16", batch=Batch(1, 2, 4)))
    assert again.reused and again.path == first.path
    shapes = build(_req(bundle, precision="fp16", batch=Batch(1, 4, 8)))
    assert not shapes.reused and shapes.entry["key"] != first.entry["key"]
    assert not first.path.exists()  # the superseded plan for the same device/precision is removed
    precision = build(_req(bundle, precision="fp32", batch=Batch(1, 4, 8)))
    assert not precision.reused
    engines = mf.read(bundle).engines
    assert sorted(e["precision"] for e in engines) == ["fp16", "fp32"]
    # the ONNX changes (here: its doc string): the engine is rebuilt
    m = onnx.load(str(bundle / "model.onnx"))
    m.doc_string = "changed"
    onnx.save(m, str(bundle / "model.onnx"))
    from edgekit.hashing import sha256_file

    man = mf.read(bundle)
    art = man.artifact("onnx", "fp32")
    new_art = mf.Artifact(art.path, art.kind, sha256_file(bundle / "model.onnx"),
                          (bundle / "model.onnx").stat().st_size, "fp32")
    (bundle / "manifest.json").write_text(man.with_artifact(new_art).to_json())
    rebuilt = build(_req(bundle, precision="fp32", batch=Batch(1, 4, 8)))
    assert not rebuilt.reused and rebuilt.entry["key"] != precision.entry["key"]


def test_timing_cache_path_per_device_and_version(bundle, tmp_path):
    from edgekit.trt.compat import features
    from edgekit.trt.engine import timing_cache_path

    a = timing_cache_path("jetson-agx-orin", "tensorrt", "10.3.0")
    assert a != timing_cache_path("jetson-agx-orin", "tensorrt", "8.6.2")
    assert a != timing_cache_path("x", "tensorrt", "10.3.0")
    # TensorRT-RTX made timing caches no-ops (1.2): nothing is written for it
    assert not features("tensorrt_rtx", "1.7").timing_cache
    build(_req(bundle, precision="fp32"))
    assert not list((tmp_path / "cache").rglob("*.cache"))


def test_missing_precision_model_says_how_to_make_it(bundle):
    with pytest.raises(UsageError, match="no int8 ONNX model.*edgekit calibrate"):
        build(_req(bundle, precision="int8"))


def test_profile_refusals_before_any_work(bundle):
    with pytest.raises(UsageError, match="no fast INT8 on Maxwell"):
        build(_req(bundle, precision="int8", profile="jetson-nano"))
    with pytest.raises(UsageError, match="TensorRT-RTX does not target jetson-orin-nano"):
        build(_req(bundle, precision="fp16", profile="jetson-orin-nano"))
    with pytest.raises(UsageError, match="no NVIDIA GPU or Jetson detected"):
        build(_req(bundle, precision="fp16", profile="cpu"))


def test_corrupt_onnx_fails_clearly(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf model")
    with pytest.raises(BuildError, match="parser refused model.onnx"):
        build_engine(bad, "fp32", prefer="tensorrt_rtx")


def test_refused_op_names_node_and_op(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery_node", domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(m, str(tmp_path / "m.onnx"))
    with pytest.raises(BuildError) as e:
        build_engine(tmp_path / "m.onnx", "fp32", prefer="tensorrt_rtx")
    assert "mystery_node" in str(e.value) and "NoSuchOp" in str(e.value)


@pytest.mark.parametrize("text,ok", [("8", (1, 8, 8)), ("1:4:8", (1, 4, 8)), ("4:2:8", None), ("x", None)])
def test_parse_batch(text, ok):
    if ok:
        assert (lambda b: (b.min, b.opt, b.max))(parse_batch(text)) == ok
    else:
        with pytest.raises(UsageError):
            parse_batch(text)


def test_cli_build_profiles_and_refusals(bundle):
    r = CliRunner()
    res = r.invoke(cli, ["build", str(bundle), "--fp16", "--profile", "desktop-ada", "--batch", "1:2:4"])
    assert res.exit_code == 0, res.output
    assert "desktop-ada" in res.stdout and "parsing" in res.stderr and "built in" in res.stderr
    res = r.invoke(cli, ["build", str(bundle), "--fp16", "--profile", "desktop-ada", "--batch", "1:2:4"])
    assert "reused" in res.stdout
    res = r.invoke(cli, ["profiles"])
    assert res.exit_code == 0 and "jetson-agx-orin" in res.stdout and "this machine:" in res.stdout
    res = r.invoke(cli, ["profiles", "show", "jetson-orin-nano"])
    assert res.exit_code == 0 and "dla_cores: 0" in res.stdout and "sources:" in res.stdout
    data = json.loads((bundle / "manifest.json").read_text())
    assert data["engines"][0]["trt_flavour"] == "tensorrt_rtx"


def test_bare_onnx_file(googlenet_bundle, tmp_path):
    onnx_file = tmp_path / "model.onnx"
    shutil.copy(googlenet_bundle / "model.onnx", onnx_file)
    r = CliRunner()
    res = r.invoke(cli, ["build", str(onnx_file), "--fp16", "--profile", "desktop-ada", "--batch", "1:1:2"])
    assert res.exit_code == 0, res.output
    plan = tmp_path / "model.desktop-ada-fp16.plan"
    meta = json.loads((tmp_path / "model.desktop-ada-fp16.plan.json").read_text())
    assert plan.stat().st_size > 1_000_000 and meta["precision"] == "fp16" and meta["onnx"] == "model.onnx"
    res = r.invoke(cli, ["build", str(onnx_file), "--int8", "--profile", "desktop-ada"])
    assert res.exit_code != 0 and "no INT8 scales" in str(res.exception)


def test_dla_int8_is_refused_when_its_simulation_failed_the_gate(googlenet_bundle):
    """Implicit INT8 from calibration.cache (the DLA path) was simulated at calibration; a build
    that would serve that cache refuses a failed result, notes a missing one, passes a good one."""
    from dataclasses import replace

    from edgekit import manifest as mf
    from edgekit.quant.calibrate import GateError
    from edgekit.trt.engine import _check_implicit_gate

    man = mf.read(googlenet_bundle)
    said: list[str] = []
    _check_implicit_gate(man, googlenet_bundle, said.append)
    assert said and "was not simulated" in said[0]
    failed = replace(man, validation={**man.validation, "int8": {"dla": {"status": "fail", "top1_agreement": 0.9}}})
    with pytest.raises(GateError, match="DLA path.*failed the accuracy gate.*without --dla"):  # exit 4
        _check_implicit_gate(failed, googlenet_bundle, said.append)
    ok = replace(man, validation={**man.validation, "int8": {"dla": {"status": "pass", "top1_agreement": 1.0}}})
    _check_implicit_gate(ok, googlenet_bundle, said.append)


def test_a_jetpack4_board_gets_what_it_can_use(googlenet_bundle, tmp_path):
    """A Nano (JetPack 4.6: TensorRT 8.0/8.2, Python 3.6) cannot run edgekit, and its TensorRT takes no
    uint8 input: `edgekit build --profile jetson-nano` leaves a float-input ONNX, the trtexec command
    for the profile and how to run the plan, and exits 0."""
    b = tmp_path / "gn"
    shutil.copytree(googlenet_bundle, b)
    res = CliRunner().invoke(cli, ["build", str(b), "--fp16", "--profile", "jetson-nano"])
    assert res.exit_code == 0, res.output
    kit = tmp_path / "gn-jetson-nano"
    assert res.stdout.strip() == str(kit) and "JetPack 4" in res.stderr
    assert sorted(p.name for p in kit.iterdir()) == ["README.txt", "build.sh", "googlenet.float.onnx",
                                                       "labels.txt"]
    m = onnx.load(str(kit / "googlenet.float.onnx"))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # TensorRT < 8.5: no uint8
    # TensorRT 8.0/8.2's parser reads ONNX 1.8: opset 13, IR version 7; and it computes the same
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [13] and m.ir_version == 7
    import numpy as np
    import onnxruntime as ort

    from edgekit.deploy.deepstream import float_front

    before, _ = float_front(onnx.load(str(b / "model.onnx")), drop_normalisation=False)
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 224, 224)).astype(np.float32)
    outs = [ort.InferenceSession(mm.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for mm in (before, m)]
    assert np.array_equal(outs[0], outs[1])
    script = (kit / "build.sh").read_text()
    assert "trtexec" in script and "--fp16" in script and "--workspace=256" in script
    assert "--maxShapes=input:1x3x224x224" in script  # the Nano profile's batch 1
    readme = (kit / "README.txt").read_text()
    assert "DeepStream 6.0" in readme and "Python 3.6" in readme and "JetPack 5" in readme
    assert "output-blob-names=probabilities," in readme  # the kit's ONNX output, as nvinfer must name it
    import tensorrt_rtx as trt

    network = trt.Builder(trt.Logger(trt.Logger.ERROR)).create_network(0)
    parser = trt.OnnxParser(network, trt.Logger(trt.Logger.ERROR))
    assert parser.parse_from_file(str(kit / "googlenet.float.onnx"))
    assert network.get_input(0).dtype == trt.DataType.FLOAT


def test_a_board_no_tensorrt_here_can_target_is_told_where_to_build(googlenet_bundle, tmp_path):
    b = tmp_path / "gn"
    shutil.copytree(googlenet_bundle, b)
    res = CliRunner().invoke(cli, ["build", str(b), "--fp16", "--profile", "jetson-orin-nano", "--min-agreement", "0"])
    assert res.exit_code == 0, res.output
    assert "cannot build for jetson-orin-nano" in res.stderr and "run there: edgekit build gn --fp16" in res.stderr


def _qdq_file(bundle: Path, out: Path) -> Path:
    """The bundle's model quantized for TensorRT (Q/DQ) from a quick calibration on 4 images."""
    from edgekit.quant import calibdata, quantize

    man = mf.read(bundle)
    imgs = calibdata.collect(calibdata.discover(calibdata.default_set(), variants=1)[:4], man.preprocess).images
    cal = quantize.calibrate(bundle / "model.onnx", imgs)
    q, _ = quantize.build(onnx.load(str(bundle / "model.onnx")), cal, "trt")
    onnx.save(q, str(out))
    return out



def _engine_layers(path: Path) -> list[tuple[list[str], list[str]]]:
    """TensorRT-RTX's own report of the engine it builds from ``path`` (strongly typed, as edgekit
    builds; batch 1): for each kernel, its output types and the ONNX nodes fused into it."""
    import re

    from edgekit.trt.parse import load_trt, network_flags

    trt = load_trt("tensorrt_rtx")

    class Log(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, severity, msg):
            self.lines.append(msg)

    log = Log()
    builder = trt.Builder(log)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, log)
    assert parser.parse_from_file(str(path))
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile = builder.create_optimization_profile()
    inp = network.get_input(0)
    shape = (1,) + tuple(inp.shape)[1:]
    profile.set_shape(inp.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is not None
    report = next(m for m in log.lines if m.startswith("Layers:"))
    out = []
    for line in report.splitlines():
        if line.startswith("Name: "):
            outputs = line[line.find("Outputs:"):line.find("TacticName")]
            out.append((re.findall(r"Datatype: (\w+)", outputs), re.findall(r"\[ONNX Layer: ([^\]]+)\]", line)))
    return out


def test_strongly_typed_int8_runs_int8_from_the_first_convolution_to_the_classifier(googlenet_bundle, tmp_path):
    """TensorRT 11 and TensorRT-RTX build INT8 only strongly typed (no FP16 flag): whatever the
    Q/DQ model leaves float runs FP32. TensorRT-RTX's layer report of the engine built from the
    bundle's Q/DQ model: every convolution, concatenation, pooling and add is fused into a kernel
    that writes int8; only the classifier writes float (the float32 logits)."""
    qfile = _qdq_file(googlenet_bundle, tmp_path / "model.int8.onnx")
    writes: dict[str, set[str]] = {}
    for types, nodes in _engine_layers(qfile):
        for node in nodes:
            writes.setdefault(node, set()).update(types)
    model = onnx.load(str(qfile))
    kinds = ("Conv", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Add", "Gemm")
    layers = [n for n in model.graph.node if n.op_type in kinds and not n.name.startswith("/Add")]  # (pixels)
    not_int8 = [(n.op_type, n.name) for n in layers if "Int8" not in writes.get(n.name, set())]
    assert not_int8 == [(n.op_type, n.name) for n in layers if n.op_type == "Gemm"], not_int8
    assert len(layers) > 70  # 57 convolutions, 13 max-pools, 9 concatenations, ...


def test_jetpack4_lowering_keeps_what_opset_13_cannot_say():
    """Ops that opset 13 lacks or defines otherwise keep the model's opset (and are named)."""
    from onnx import TensorProto, helper

    from edgekit.deploy.jetpack4 import for_tensorrt_8_2

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    s = onnx.numpy_helper.from_array(__import__("numpy").ones(4, "float32"), "s")
    for op, inputs, newer in (("LayerNormalization", ["x", "s"], ["LayerNormalization"]), ("Relu", ["x"], [])):
        m = helper.make_model(helper.make_graph([helper.make_node(op, inputs, ["y"])], "g", [x], [y], [s]),
                              opset_imports=[helper.make_opsetid("", 17)])
        assert for_tensorrt_8_2(m) == newer
        assert m.opset_import[0].version == (17 if newer else 13)
