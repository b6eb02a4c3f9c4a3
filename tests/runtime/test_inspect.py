"""edgekit inspect: a calibrated (INT8) bundle reads as aligned tables, with no Python reprs."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit import manifest as mf
from edgekit.cli import cli
from edgekit.runtime.inspect import describe, trt_version_text

HEADERS = ("  file ", "  precision ")  # the first column of every table edgekit inspect prints


@pytest.fixture(scope="module")
def int8_bundle(calibrated_googlenet) -> Path:
    return calibrated_googlenet


def tables(text: str) -> list[list[str]]:
    """Each table: its header line, then its rows up to the next blank line."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.startswith(HEADERS):
            rows = [line]
            for row in lines[i + 1:]:
                if not row.strip():
                    break
                rows.append(row)
            out.append(rows)
    return out


def assert_aligned(table: list[str]) -> None:
    """Every row has a cell starting where each header does, after the two-space gap."""
    header = table[0]
    starts = [2] + [m.end() for m in re.finditer(r"\S {2,}", header)]
    assert len(table) > 1, f"a table without rows:\n{header}"
    for row in table[1:]:
        for s in starts:
            assert row[s - 2:s] == "  " and row[s:s + 1].strip(), \
                f"column at {s} of\n{header}\nnot aligned in\n{row}"


def assert_no_reprs(text: str) -> None:
    for pattern in ("{'", "[{", "': ", "['", "{\"", "[[", "None", "True", "False"):
        assert pattern not in text, f"{pattern!r} in:\n{text}"


def test_inspect_int8_bundle_prints_aligned_tables(int8_bundle):
    res = CliRunner().invoke(cli, ["inspect", str(int8_bundle)])
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert_no_reprs(text)
    found = tables(text)
    assert [t[0].split()[:2] for t in found] == [["file", "kind"], ["precision", "top-1"]], text
    for t in found:
        assert_aligned(t)
    art, figs = found
    assert {r.split()[0] for r in art[1:]} >= {"model.onnx", "model.int8.onnx", "model.int8-cpu.onnx",
                                               "model.fp16.onnx", "calibration.cache", "labels.txt"}
    assert all(r.split()[-1] == "ok" for r in art[1:])
    assert [r[2:25].strip() for r in figs[1:]] == ["int8 (TensorRT)", "int8-cpu (ORT/OpenVINO)",
                                                   "int8 (DLA, cache)", "fp16", "bf16 (OpenVINO)"]
    for col in ("95% interval", "top-5 overlap", "cosine", "gate"):
        assert col in figs[0]
    assert all(r.split()[-1] in ("pass", "undecided") for r in figs[1:])
    assert re.search(r"^  cache +calibration\.cache for TensorRT \d+\.\d+\.\d+ \(EntropyCalibration2, \d+ tensors\)$",
                     text, re.M), text
    assert re.search(r"^  images +16 for calibration, \d+ for validation \(unlabelled\)$", text, re.M), text
    assert re.search(r"^  fallbacks +none: every layer quantized$", text, re.M), text


def test_inspect_engines_accuracy_fallbacks_and_origin(int8_bundle, tmp_path):
    """What a bundle gains later (engines built on a device, labelled accuracy, layers kept in FP32, an import
    or training record) is printed in the same way."""
    b = tmp_path / "b"
    shutil.copytree(int8_bundle, b)
    man = mf.read(b)
    int8 = dict(man.validation["int8"])
    int8["labelled"] = True
    int8["fallback_layers"] = ["/model/conv1/conv/Conv", "/model/fc/Gemm"]
    int8["tensorrt"] = {**int8["tensorrt"], "accuracy": {"fp32": 0.9, "this": 0.89, "drop": 0.01,
                                                         "drop_95": [-0.004, 0.024], "status": "pass"}}
    engine = {"path": "engines/jetson-orin-nano-int8-0123456789ab.plan", "precision": "int8",
              "trt_flavour": "tensorrt", "trt_version": "8.6.2.3", "device": "jetson-orin-nano",
              "compute_capability": "8.7", "dla_core": None, "batch": {"min": 1, "opt": 4, "max": 8},
              "built": "2026-01-02T03:04:05+00:00"}
    dla = {**engine, "path": "engines/jetson-agx-orin-int8-dla0-0123456789ab.plan", "device": "jetson-agx-orin",
           "dla_core": 0, "batch": {"min": 4, "opt": 4, "max": 4}}
    training = {"run": "/runs/flowers", "best_epoch": 7, "val_accuracy": 0.913, "images": {"train": 900, "val": 100},
                "weights": "imagenet"}
    record = {"file": "m.onnx", "producer_name": "tf2onnx", "producer_version": "1.16", "opset": 13,
              "input": {"layout": "NHWC"}, "preset": None, "softmax_removed": True,
              "flags": {"mean": [0.5, 0.5, 0.5], "input_size": [299, 299], "layout": "nhwc"}}
    (b / "manifest.json").write_text(replace(
        man, engines=(engine, dla),
        validation={**man.validation, "int8": int8, "training": training, "import": record,
                    "future": {"a": [1, 2], "b": {"c": True}}}).to_json())
    text = describe(b)
    assert_no_reprs(text)
    found = tables(text)
    assert [t[0].split()[:2] for t in found] == [["file", "kind"], ["precision", "TensorRT"],
                                                 ["precision", "top-1"]], text
    for t in found:
        assert_aligned(t)
    eng, figs = found[1], found[2]
    assert "accuracy drop (95%)" in figs[0]
    assert "1.0 pts (-0.4 to 2.4)" in figs[1] and figs[2].count(" - ") >= 1
    assert eng[1].split()[:4] == ["int8", "tensorrt", "8.6.2.3", "jetson-orin-nano"] and "1-8, opt 4" in eng[1]
    assert "DLA 0" in eng[2]
    assert "2 layers kept in FP32: /model/conv1/conv/Conv, /model/fc/Gemm" in text
    assert "gate         top-1 agreement at least 0.00, accuracy drop at most 1.0 points" in text
    assert ("  import: m.onnx (tf2onnx 1.16, opset 13), NHWC input, flags: --mean 0.5,0.5,0.5 --input-size 299x299 "
            "--layout nhwc; its Softmax removed (logits out)") in text
    assert ("  training: edgekit train run /runs/flowers, best epoch 7, validation accuracy 91.3% (900 training, "
            "100 validation images), from imagenet") in text
    assert "  future: a 1, 2, b c yes" in text


def test_inspect_broken_labels_is_the_labels_row_state(int8_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(int8_bundle, b)
    (b / "labels.txt").write_text("")
    text = describe(b)
    (art,) = [t for t in tables(text) if t[0].split()[0] == "file"]
    assert_aligned(art)
    (row,) = [r for r in art if r.split()[0] == "labels.txt"]
    assert not row.rstrip().endswith(" ok"), row


@pytest.mark.parametrize("number, text", [(8601, "8.6.1"), (8502, "8.5.2"), (100300, "10.3.0"),
                                          (101401, "10.14.1")])
def test_cache_header_version(number, text):
    from edgekit.quant.calibcache import trt_version_number

    assert trt_version_text(number) == text and trt_version_number(text) == number
