from __future__ import annotations

import struct

import pytest

from edgekit.errors import UsageError
from edgekit.quant import calibcache

# Caches as TensorRT itself writes them (header, then "tensor: hex of big-endian float32 scale").
TRT_8601 = "TRT-8601-EntropyCalibration2\ninput: 3c009976\nconv1_output: 3caa54fc\nrelu: 0\n"
TRT_8203 = "TRT-8203-EntropyCalibration2\ndata: 3c010a14\n(Unnamed Layer* 1) [Convolution]_output: 3d3e4f31\n"
TRT_101401 = "TRT-101401-EntropyCalibration2\nimages: 3c010204\n/model.0/conv/Conv_output_0: 3e0b9c5a\n"


def test_reads_tensorrt_written_caches():
    c = calibcache.loads(TRT_8601)
    assert (c.version, c.algorithm) == (8601, "EntropyCalibration2")
    assert c.scales["input"] == pytest.approx(1 / 127, rel=5e-3)  # 3c009976 ~ 0.00785: amax ~ 1.0
    assert c.amax("input") == pytest.approx(1.0, rel=5e-3)
    assert c.scales["conv1_output"] == pytest.approx(struct.unpack(">f", bytes.fromhex("3caa54fc"))[0])
    assert c.scales["relu"] == 0.0
    c2 = calibcache.loads(TRT_8203)
    assert "(Unnamed Layer* 1) [Convolution]_output" in c2.scales  # names may contain spaces and brackets
    c3 = calibcache.loads(TRT_101401)
    assert c3.version == 101401 and "/model.0/conv/Conv_output_0" in c3.scales


@pytest.mark.parametrize("text", [TRT_8601, TRT_8203, TRT_101401])
def test_round_trip_is_byte_exact(text):
    assert calibcache.dumps(calibcache.loads(text)) == text


def test_from_amax_uses_amax_over_127_and_writes_zero():
    c = calibcache.from_amax({"a": 2.54, "b": 0.0}, 8601, "EntropyCalibration2")
    text = calibcache.dumps(c)
    lines = text.splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert lines[1] == "a: " + struct.pack(">f", 2.54 / 127).hex()
    assert lines[2] == "b: " + struct.pack(">f", 1 / 127).hex()  # never 0: TensorRT 8.6 fails on it


def test_version_numbers():
    assert calibcache.trt_version_number("8.6.1.6") == 8601
    assert calibcache.trt_version_number("8.2.3") == 8203
    assert calibcache.trt_version_number("10.14.1") == 101401
    assert calibcache.trt_version_number("10.3.0") == 100300


@pytest.mark.parametrize("bad,match", [
    ("", "empty"),
    ("TensorRT cache\nx: 0\n", "not a TensorRT cache header"),
    ("TRT-8601-EntropyCalibration2\nnocolon\n", "line 2"),
    ("TRT-8601-EntropyCalibration2\nx: zzzz\n", "line 2"),
])
def test_bad_caches_are_clear(bad, match):
    with pytest.raises(UsageError, match=match):
        calibcache.loads(bad, "calibration.cache")
