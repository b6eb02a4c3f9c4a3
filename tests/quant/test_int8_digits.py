"""INT8 end to end on a model trained here: GoogLeNet on scikit-learn's handwritten digits.

Trained for ~250 steps (about a minute on two quiet cores, several when shared; the fixture says so as it
runs) to well above chance (10 classes),
exported through the real pipeline, calibrated on one part of the data, judged on another.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("cv2")

import onnx  # noqa: E402

from edgekit import manifest as mf  # noqa: E402
from edgekit.errors import UsageError  # noqa: E402
from edgekit.quant import calibcache, quantize  # noqa: E402
from edgekit.quant.calibrate import CalibrateRequest, GateError, calibrate_bundle  # noqa: E402
from edgekit.quant.evaluate import evaluate  # noqa: E402
from tests import digits  # noqa: E402

TRAIN = 1300


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """GoogLeNet trained on 1,300 digits (250 steps), then exported: about a minute on two quiet cores"""
    root = tmp_path_factory.mktemp("digits")
    fp32, x, y = digits.trained_bundle(root, TRAIN)
    digits.write_folder(root / "calib", x[:TRAIN:4], y[:TRAIN:4], by_class=False)  # 325 training images
    digits.write_folder(root / "calib300", x[2:TRAIN:4][:300], y[2:TRAIN:4][:300], by_class=False)
    digits.write_folder(root / "val", x[TRAIN:], y[TRAIN:])  # 497 held out, by class
    const = root / "constant"
    digits.write_folder(const, np.full((40, 64, 64, 3), 128, np.uint8), np.zeros(40, int), by_class=False)
    return root, fp32


@pytest.fixture(scope="module")
def int8_bundle(trained):
    root, fp32 = trained
    b = root / "int8"
    shutil.copytree(fp32, b)
    res = calibrate_bundle(CalibrateRequest(b, root / "calib", method="entropy", val_data=root / "val"))
    return b, res


def test_model_learned_and_int8_keeps_accuracy_within_one_point(trained, int8_bundle):
    root, _ = trained
    b, res = int8_bundle
    acc = {a.precision: a for a in evaluate(b, root / "val")}
    assert acc["fp32"].images == 497
    assert acc["fp32"].top1 > 0.8  # chance is 0.1
    assert abs(acc["int8"].top1 - acc["fp32"].top1) <= 0.01
    assert abs(acc["int8-cpu"].top1 - acc["fp32"].top1) <= 0.01
    assert abs(acc["fp16"].top1 - acc["fp32"].top1) <= 0.002
    assert res.figures["int8"]["top1_agreement"] >= 0.99
    assert res.figures["fp16"]["top1_agreement"] >= 0.999


def test_manifest_records_artifacts_and_figures(int8_bundle):
    b, _ = int8_bundle
    man = mf.read(b)
    for prec in ("fp32", "fp16", "int8", "int8-cpu"):
        assert man.artifact("onnx", prec) is not None
    paths = {a.path for a in man.artifacts}
    assert {"calibration.cache", "calibration.json"} <= paths
    v = man.validation["int8"]
    assert v["method"] == "entropy" and v["calibration_images"] == 325 and v["validation_images"] == 497
    assert v["tensorrt"]["top1_agreement"] >= 0.99 and v["fallback_layers"] == []
    assert "fp16" in man.validation
    # the statistics: an interval, the test against --min-agreement, and (labelled folders) accuracy
    assert v["labelled"] and v["cpu_weight_bits"] == 7
    for form in ("tensorrt", "cpu", "dla"):
        f = v[form]
        assert f["agreement_test"]["images"] == 497 and f["status"] in ("pass", "undecided")
        assert f["top1_agreement_95"][0] <= f["top1_agreement"] <= f["top1_agreement_95"][1]
        assert abs(f["accuracy"]["drop"]) <= 0.01 and f["accuracy"]["status"] != "fail"
    assert man.validation["fp16"]["status"] == "pass"
    assert "cpu" in v["cpu_kernels_here"] and v["cpu_kernels_here"]["top1_agreement"] >= 0.99
    # bf16 (OpenVINO's path on CPUs with AVX512-BF16/AMX), judged by simulation on any CPU
    bf = man.validation["bf16"]
    assert bf["status"] == "pass" and bf["agreement_test"]["images"] == 497 and abs(bf["accuracy"]["drop"]) <= 0.01
    assert not [p for p in b.iterdir() if p.name.startswith(".calibrate-")]  # no leftovers


def test_openvino_computes_what_the_gate_simulated(trained, int8_bundle):
    """The CPU form's and bf16's gate figures hold for OpenVINO: its own kernels on this CPU agree
    with FP32 as the simulation said, on the 497 held-out digits (bf16 where this CPU has it)."""
    pytest.importorskip("openvino")
    from edgekit.preprocess import graph_input
    from edgekit.quant import calibdata, gate
    from edgekit.runners.openvino import OpenVinoRunner, capabilities
    from edgekit.runners.ort import OrtRunner

    root, _ = trained
    b, _ = int8_bundle
    man = mf.read(b)
    items = calibdata.discover(root / "val")
    x = graph_input(calibdata.collect(items, man.preprocess).images, man.input.dtype != "uint8",
                    man.input.color_order)
    with OrtRunner(b / "model.onnx") as r:
        ref = gate.run_all(r, x)
    checks = [("int8-cpu", b / "model.int8-cpu.onnx", "f32", man.validation["int8"]["cpu"])]
    if "BF16" in capabilities():
        checks.append(("bf16", b / "model.onnx", "bf16", man.validation["bf16"]))
    for name, path, hint, simulated in checks:
        with OpenVinoRunner(path, hint) as ov:
            got = gate.agreement(ref, gate.run_all(ov, x))
        assert got.images == simulated["agreement_test"]["images"] == 497, name
        assert abs(got.top1_agreement - simulated["top1_agreement"]) <= 0.01, (name, got, simulated)
        assert got.top1_agreement >= 0.98, name


def test_tensorrt_qdq_model_structure(int8_bundle):
    b, _ = int8_bundle
    m = onnx.load(str(b / "model.int8.onnx"))
    inits = {i.name: i for i in m.graph.initializer}
    # float biases: nothing quantized to int32
    assert not [i for i in m.graph.initializer if i.data_type == onnx.TensorProto.INT32]
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for n in qs:  # symmetric int8 activations: zero point 0, int8
        zp = onnx.numpy_helper.to_array(inits[n.input[2]])
        assert zp.dtype == np.int8 and not zp.any()
    per_channel = [n for n in m.graph.node if n.op_type == "DequantizeLinear"
                   and onnx.numpy_helper.to_array(inits[n.input[1]]).size > 1]
    assert len(per_channel) >= 50  # every conv's weights, per output channel
    # preprocessing stays float: its nodes are kept and none of their outputs but the last is quantized
    pre = quantize.activations.preprocessing_nodes(onnx.load(str(b / "model.onnx")))
    nodes = {n.name: n for n in m.graph.node}
    assert [nodes[p].op_type for p in pre] == ["Cast", "Transpose", "Gather", "Mul", "Add"]
    quantized_inputs = {n.input[0] for n in qs}
    assert not {o for p in pre[:-1] for o in nodes[p].output} & quantized_inputs


def test_cpu_variant_uses_uint8_activations(int8_bundle):
    b, _ = int8_bundle
    m = onnx.load(str(b / "model.int8-cpu.onnx"))
    inits = {i.name: i for i in m.graph.initializer}
    zps = [onnx.numpy_helper.to_array(inits[n.input[2]]) for n in m.graph.node
           if n.op_type == "QuantizeLinear" and n.input[2] in inits]
    assert zps and all(z.dtype == np.uint8 for z in zps)


def test_fp16_model_keeps_io_types(int8_bundle):
    b, _ = int8_bundle
    m = onnx.load(str(b / "model.fp16.onnx"))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)


def test_calibration_cache_and_json(int8_bundle):
    b, _ = int8_bundle
    cache = calibcache.loads((b / "calibration.cache").read_text())
    assert cache.version == 100300 and cache.algorithm == "EntropyCalibration2"
    fp32 = onnx.load(str(b / "model.onnx"))
    tensors = {o for n in fp32.graph.node for o in n.output}
    assert set(cache.scales) <= tensors | {fp32.graph.input[0].name}
    assert len(cache.scales) > 50
    data = json.loads((b / "calibration.json").read_text())
    assert data["images"] == 325 and len(data["image_list_sha256"]) == 64
    name = next(iter(cache.scales))
    assert cache.amax(name) == pytest.approx(data["tensors"][name]["amax"], rel=1e-6)


def test_tensorrt_rtx_builds_int8_and_fp16(int8_bundle):
    pytest.importorskip("tensorrt_rtx")
    from edgekit.trt.build import BuildOptions, build_engine

    b, _ = int8_bundle
    for name in ("model.int8.onnx", "model.fp16.onnx"):
        built = build_engine(b / name, name.split(".")[1], BuildOptions(batch=(1, 4, 8)), prefer="tensorrt_rtx")
        assert len(built.plan) > 1_000_000


def test_gate_catches_constant_image_calibration(trained):
    root, fp32 = trained
    b = root / "broken"
    shutil.copytree(fp32, b)
    before = (b / "manifest.json").read_text()
    with pytest.raises(GateError) as e:
        calibrate_bundle(CalibrateRequest(b, root / "constant", val_data=root / "val"))
    msg = str(e.value)
    assert "accuracy gate failed" in msg and "--fallback auto" in msg and "The bundle is unchanged" in msg
    assert (b / "manifest.json").read_text() == before
    assert sorted(p.name for p in b.iterdir()) == ["labels.txt", "manifest.json", "model.onnx"]


def test_fallback_auto_finds_a_deliberately_broken_layer(trained, monkeypatch):
    """One tensor's threshold is shrunk 100x: the gate fails; fallback keeps its consumer in FP32,
    found by its effect on the logits over all validation images."""
    root, fp32 = trained
    b = root / "fallback"
    shutil.copytree(fp32, b)
    broken_tensor = "/model/inception4c/branch2/branch2.0/Relu_output_0"
    consumer = "/model/inception4c/branch2/branch2.1/conv/Conv"
    real = quantize.calibrate

    def sabotaged(*args, **kwargs):
        cal = real(*args, **kwargs)
        return cal.with_amax(broken_tensor, cal.amax[broken_tensor] / 100)

    monkeypatch.setattr(quantize, "calibrate", sabotaged)
    # 250 of the 497 held-out digits (a spread sample: every class) find it as well, in half the time
    with pytest.raises(GateError, match="accuracy gate failed"):
        calibrate_bundle(CalibrateRequest(b, root / "calib", val_data=root / "val", num_val_images=250))
    said: list[str] = []
    res = calibrate_bundle(CalibrateRequest(b, root / "calib", val_data=root / "val", num_val_images=250,
                                            fallback="auto"), log=said.append)
    assert res.fallback_layers[0] == consumer and len(res.fallback_layers) <= 2
    assert mf.read(b).validation["int8"]["fallback_layers"] == res.fallback_layers
    assert any("effect on the logits" in s and "250 images" in s for s in said), said
    assert res.figures["int8"]["status"] != "fail"


def test_too_few_images_gives_both_counts(trained):
    root, fp32 = trained
    with pytest.raises(UsageError, match=r"asked for 1000 calibration images but .* has only \d+ usable"):
        calibrate_bundle(CalibrateRequest(fp32, root / "calib", num_images=1000, val_data=root / "val"))


def test_overlapping_validation_refused(trained):
    root, fp32 = trained
    with pytest.raises(UsageError, match="must not overlap"):
        calibrate_bundle(CalibrateRequest(fp32, root / "val", val_data=root / "val"))


def test_cli_calibrate_eval_and_build(trained, tmp_path):
    from click.testing import CliRunner

    from edgekit.cli import cli

    root, fp32 = trained
    b = tmp_path / "cli"
    shutil.copytree(fp32, b)
    runner = CliRunner()
    res = runner.invoke(cli, ["calibrate", str(b), "--data", str(root / "calib"), "--val-data", str(root / "val"),
                              "--method", "minmax"])
    assert res.exit_code == 0, res.output
    assert "int8-cpu" in res.stdout and "images/s" in res.stderr
    assert "\r" not in res.stderr  # not a terminal: a line per stage, no redrawn bar in the log
    assert "95% interval" in res.stdout and "dla" in res.stdout
    res = runner.invoke(cli, ["inspect", str(b)])
    assert res.exit_code == 0 and "\n  int8 (TensorRT) " in res.stdout and "\n  int8 (DLA, cache) " in res.stdout
    res = runner.invoke(cli, ["eval", str(b), "--data", str(root / "val")])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert "497 images" in lines[0] and {ln.split()[0] for ln in lines[1:]} == {"fp32", "fp16", "int8", "int8-cpu"}
    assert "TensorRT arithmetic, simulated" in next(ln for ln in lines if ln.startswith("int8 "))
    fresh = tmp_path / "fresh"
    shutil.copytree(fp32, fresh)
    res = runner.invoke(cli, ["build", str(fresh), "--int8", "--calib-data", str(root / "constant"),
                              "--val-data", str(root / "val"), "--num-val-images", "100"])
    assert res.exit_code != 0 and isinstance(res.exception, GateError)


def test_eval_class_map_and_bad_folders(trained, tmp_path):
    root, fp32 = trained
    mapping = tmp_path / "map.txt"
    mapping.write_text("\n".join(f"{i} {i}" for i in range(10)))
    rows = evaluate(fp32, root / "val", mapping)
    assert rows[0].precision == "fp32" and rows[0].top1 > 0.8
    bad = tmp_path / "bad"
    (bad / "zebra").mkdir(parents=True)
    with pytest.raises(UsageError, match="neither one of the bundle's labels"):
        evaluate(fp32, bad)


def test_default_calibration_set_notice(trained, tmp_path):
    _, fp32 = trained
    b = tmp_path / "d"
    shutil.copytree(fp32, b)
    said: list[str] = []
    calibrate_bundle(CalibrateRequest(b, None, min_agreement=0.0), log=said.append)
    assert any("own camera" in s for s in said)
    assert mf.read(b).validation["int8"]["calibration_images"] > 40


def test_interrupted_calibration_leaves_the_bundle_as_it_was(trained, monkeypatch):
    root, fp32 = trained
    b = root / "interrupted"
    shutil.copytree(fp32, b)
    before = sorted(p.name for p in b.iterdir())

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(quantize, "to_fp16", interrupt)
    with pytest.raises(KeyboardInterrupt):
        calibrate_bundle(CalibrateRequest(b, root / "calib", val_data=root / "val"))
    assert sorted(p.name for p in b.iterdir()) == before


def test_calibration_scales_do_not_depend_on_the_order_of_the_images(trained):
    root, fp32 = trained
    man = mf.read(fp32)
    from edgekit.quant import calibdata

    imgs = calibdata.collect(calibdata.discover(root / "calib"), man.preprocess).images[:96]
    a = quantize.calibrate(fp32 / "model.onnx", imgs)
    b = quantize.calibrate(fp32 / "model.onnx", imgs[np.random.default_rng(5).permutation(len(imgs))])
    assert a.amax == b.amax and a.ranges == b.ranges
    assert len(a.amax) > 100 and all(v > 0 for v in a.amax.values())


def test_the_issue_check_flat_300_images_default_options(trained, tmp_path):
    """A fine-tuned 10-class GoogLeNet, 300 calibration images in one flat folder, every option
    at its default: the gate passes (60 held out: one flip is not evidence), and every INT8
    model keeps held-out accuracy within 1 point through ONNX Runtime on this CPU."""
    from click.testing import CliRunner

    from edgekit.cli import cli

    root, fp32 = trained
    b = tmp_path / "flat"
    shutil.copytree(fp32, b)
    res = CliRunner().invoke(cli, ["build", str(b), "--int8", "--calib-data", str(root / "calib300")])
    assert res.exit_code == 0, res.output
    v = mf.read(b).validation["int8"]
    assert v["calibration_images"] == 240 and v["validation_images"] == 60
    assert not v["labelled"] and "accuracy" not in v["tensorrt"]  # a flat folder has no labels
    acc = {a.precision: a.top1 for a in evaluate(b, root / "val")}
    assert abs(acc["int8"] - acc["fp32"]) <= 0.01 and abs(acc["int8-cpu"] - acc["fp32"]) <= 0.01


def _probe_script(path):
    path.write_text("""
import sys, numpy as np, onnx
from pathlib import Path
from edgekit.quant import qdq, quantize
from edgekit.cpuinfo import detect
from edgekit.runners.ort import OrtRunner
from edgekit.quant.simulate import SimRunner
b, imgs, out = Path(sys.argv[1]), np.load(sys.argv[2]), sys.argv[3]
res = {}
with SimRunner(b / "model.int8.onnx") as r:
    res["sim_trt"] = r.infer(imgs)
with SimRunner(b / "model.int8-cpu.onnx") as r:
    res["sim_cpu"] = r.infer(imgs)
with OrtRunner(b / "model.int8-cpu.onnx") as r:
    res["kernels_cpu7"] = r.infer(imgs)
with SimRunner(b / "cpu8.onnx") as r:
    res["sim_cpu8"] = r.infer(imgs)
with SimRunner(b / "model.onnx", fp16=True) as r:
    res["sim_fp16"] = r.infer(imgs)
with SimRunner(b / "dla.onnx") as r:
    res["sim_dla"] = r.infer(imgs)
with OrtRunner(b / "cpu8.onnx") as r:
    res["kernels_cpu8"] = r.infer(imgs)
np.savez(out, kind=np.array(detect().kind), **res)
""")


QEMU = shutil.which("qemu-x86_64")


def test_gate_figures_are_bit_identical_on_an_avx2_cpu_and_the_cpu_form_does_not_saturate(int8_bundle,
                                                                                          tmp_path):
    """The same bundle on this CPU and on an AMD EPYC-Rome (AVX2, no AVX-512, no VNNI) emulated by
    QEMU with its own CPUID, so ONNX Runtime dispatches its AVX2 kernels: the simulated TensorRT
    and CPU forms give the same logits to the bit; the 7-bit CPU form's fused kernels stay with
    its simulation, and an 8-bit one saturates there (the reason the CPU form has 7-bit weights)."""
    import platform
    import subprocess
    import sys

    if platform.machine() not in ("x86_64", "AMD64") or QEMU is None:
        pytest.skip("needs an x86_64 host with qemu-x86_64 (apt-get install qemu-user; .ci/run installs it)")
    b, _ = int8_bundle
    from edgekit.quant import calibdata, cpu_qdq, qdq

    work = tmp_path / "b"
    shutil.copytree(b, work)
    cal = json.loads((b / "calibration.json").read_text())
    ranges = {k: (t["min"], t["max"]) for k, t in cal["tensors"].items()}
    m = onnx.load(str(b / "model.onnx"))
    cpu8, _ = cpu_qdq.cpu_qdq(m, ranges, preprocessing=quantize.activations.preprocessing_nodes(m), weight_qmax=127)
    onnx.save(cpu8, str(work / "cpu8.onnx"))
    amax = {k: t["amax"] for k, t in cal["tensors"].items()}
    onnx.save(qdq.implicit_int8(m, amax, quantize.activations.preprocessing_nodes(m)), str(work / "dla.onnx"))
    man = mf.read(b)
    items = calibdata.spread(calibdata.discover(b.parent / "val"), b.parent / "val")[:12]  # emulation is slow
    np.save(tmp_path / "imgs.npy", calibdata.collect(items, man.preprocess).images)
    _probe_script(tmp_path / "probe.py")
    env = {**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[2])}
    args = [str(tmp_path / "probe.py"), str(work), str(tmp_path / "imgs.npy")]
    subprocess.run([sys.executable, *args, str(tmp_path / "here.npz")], check=True, env=env, timeout=300)
    subprocess.run([QEMU, "-cpu", "EPYC-Rome", sys.executable, *args, str(tmp_path / "avx2.npz")], check=True,
                   env=env, timeout=900, capture_output=True)
    here, avx2 = np.load(tmp_path / "here.npz"), np.load(tmp_path / "avx2.npz")
    assert str(avx2["kind"]) == "x86 AVX2 without VNNI"
    for key in ("sim_trt", "sim_cpu", "sim_cpu8", "sim_fp16", "sim_dla"):
        assert np.array_equal(here[key], avx2[key]), key

    def rel(a, b):
        return float(np.abs(a - b).max() / np.abs(b).max())

    assert rel(avx2["kernels_cpu7"], avx2["sim_cpu"]) < 0.02  # 7-bit weights: no saturation on AVX2
    assert rel(avx2["kernels_cpu8"], avx2["sim_cpu8"]) > 5 * rel(avx2["kernels_cpu7"], avx2["sim_cpu"])


def test_runtime_takes_the_safe_form_on_a_cpu_that_saturates(int8_bundle, tmp_path, monkeypatch):
    """An AVX2 CPU without VNNI stands in for the real one here (its CPUID is replaced; the real
    kernels are exercised under QEMU above): a bundle with the 8-bit CPU form of earlier edgekit
    runs FP32 and says why; a current bundle runs its 7-bit form."""
    import edgekit
    from edgekit import cpuinfo

    b, _ = int8_bundle
    avx2 = cpuinfo.CpuKind("x86_64", "stand-in AVX2 CPU", frozenset({"avx2", "fma"}))
    monkeypatch.setattr(cpuinfo, "detect", lambda *a, **k: avx2)
    with edgekit.load(b, backend="onnxruntime") as clf:
        assert clf.precision == "int8-cpu"
    old = tmp_path / "old"
    shutil.copytree(b, old)
    man = mf.read(old)
    v = dict(man.validation["int8"])
    del v["cpu_weight_bits"]
    from dataclasses import replace

    (old / "manifest.json").write_text(replace(man, validation={**man.validation, "int8": v}).to_json())
    with edgekit.load(old, backend="onnxruntime") as clf:
        assert clf.precision == "fp32" and "saturate" in clf.why and "edgekit calibrate" in clf.why
    with edgekit.load(old, backend="onnxruntime", precision="int8") as clf:
        assert "float operations" in clf.why


def test_the_normalised_image_is_never_clipped(int8_bundle):
    """The first convolution reads the preprocessed image, whose range is known: its threshold
    spans black to white whatever entropy calibration would clip (it clipped white digit strokes,
    2.64 -> 2.13, and cost a torchvision GoogLeNet 1.5 points of agreement)."""
    b, _ = int8_bundle
    pre = mf.read(b).preprocess
    m = onnx.load(str(b / "model.onnx"))
    first = next(n for n in m.graph.node if n.op_type == "Conv").input[0]
    t = json.loads((b / "calibration.json").read_text())["tensors"][first]
    mean, std = np.array(pre.mean), np.array(pre.std)
    bound = max(np.abs(-mean / std).max(), np.abs((pre.input_range - mean) / std).max())
    assert t["amax"] == pytest.approx(bound, rel=1e-5)
    assert t["amax"] == t["observed_absmax"]
