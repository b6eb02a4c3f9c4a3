"""Bad input on the input side (issue 14): image files, frames, model sizes, checkpoints and
profiles give one clear error (or are skipped and named), never a traceback."""

from __future__ import annotations

import json
import shutil
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.errors import BundleError, UsageError, WeightsError
from tests.cli.test_cli import run


def write_png(path: Path, width: int, height: int, rows: int | None = None) -> Path:
    """A greyscale PNG of zeros; ``rows`` < height writes only that much pixel data (a file
    whose header claims more than it holds)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(1)
    row = bytes(width + 1)
    data = b"".join([comp.compress(row) for _ in range(height if rows is None else rows)] + [comp.flush()])
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------- image files


def test_empty_image_file_is_a_usage_error(tmp_path):
    from edgekit.images import read_image

    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(UsageError, match=r"empty\.jpg is empty \(0 bytes\)"):
        read_image(empty)


def test_image_beyond_opencv_pixel_limit_is_a_usage_error(tmp_path, monkeypatch):
    """40000x40000 is over CV_IO_MAX_IMAGE_PIXELS (2^30): OpenCV's assertion was a traceback."""
    from edgekit.images import read_image

    huge = write_png(tmp_path / "huge.png", 40000, 40000, rows=2)
    with pytest.raises(UsageError, match="40000x40000 .*megapixel limit.*EDGEKIT_MAX_IMAGE_MEGAPIXELS"):
        read_image(huge)
    # raising edgekit's limit past OpenCV's still ends in a clear error, from OpenCV's refusal
    monkeypatch.setenv("EDGEKIT_MAX_IMAGE_MEGAPIXELS", "5000")
    with pytest.raises(UsageError, match="cannot decode image .*huge.png"):
        read_image(huge)


def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch):
    """A 0.3 MB PNG of 8000x8000 (64 megapixels) decodes to 192 MB: refused from its header."""
    from edgekit.images import read_image

    bomb = write_png(tmp_path / "bomb.png", 8000, 8000)
    assert bomb.stat().st_size < 1_000_000
    t0 = time.perf_counter()
    with pytest.raises(UsageError, match=r"8000x8000 \(64 megapixels\), beyond the 50-megapixel limit"):
        read_image(bomb)
    assert time.perf_counter() - t0 < 0.5
    monkeypatch.setenv("EDGEKIT_MAX_IMAGE_MEGAPIXELS", "70")
    assert read_image(bomb).shape == (8000, 8000, 3)
    with pytest.raises(UsageError, match="beyond the 1-megapixel limit"):
        read_image(bomb, max_mp=1)
    monkeypatch.setenv("EDGEKIT_MAX_IMAGE_MEGAPIXELS", "lots")
    with pytest.raises(UsageError, match="EDGEKIT_MAX_IMAGE_MEGAPIXELS='lots' is not a positive number"):
        read_image(bomb)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp", ".tiff", ".ppm", ".gif"])
def test_header_size_matches_opencv(ext):
    from edgekit.images import image_size

    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    assert image_size(buf.tobytes()) == (53, 37)


def test_progressive_jpeg_and_lossless_webp_sizes():
    from edgekit.images import image_size

    img = np.random.default_rng(1).integers(0, 256, (41, 29, 3), dtype=np.uint8)
    for ext, params in ((".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])):
        ok, buf = cv2.imencode(ext, img, params)
        assert ok and image_size(buf.tobytes()) == (29, 41), ext


def test_calibration_skips_and_names_empty_huge_and_bomb_files(tmp_path):
    from edgekit.preprocess import Preprocess
    from edgekit.quant import calibdata

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"good{i}.png"), np.full((40, 50, 3), 60 * i, np.uint8))
    (tmp_path / "empty.jpg").write_bytes(b"")
    write_png(tmp_path / "huge.png", 40000, 40000, rows=2)
    write_png(tmp_path / "bomb.png", 20000, 20000, rows=2)
    items = calibdata.discover(tmp_path)
    got = calibdata.collect(items, Preprocess(32, 32))
    assert len(got.items) == 3 and got.images.shape == (3, 32, 32, 3)
    why = {it.path.name: reason for it, reason in got.skipped}
    assert set(why) == {"empty.jpg", "huge.png", "bomb.png"}
    assert "is empty (0 bytes)" in why["empty.jpg"]
    assert "beyond the 50-megapixel limit" in why["bomb.png"] and "40000x40000" in why["huge.png"]
    warning = calibdata.skipped_warning(got.skipped)
    assert warning is not None and warning.startswith("skipped 3 unreadable file(s):")


@pytest.mark.parametrize("name,make,needle", [
    ("empty.jpg", lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    ("huge.png", lambda p: write_png(p, 40000, 40000, rows=2), "megapixel limit"),
])
def test_classify_cli_bad_image_is_one_line(googlenet_bundle, tmp_path, name, make, needle):
    path = tmp_path / name
    make(path)
    res = run(["classify", str(googlenet_bundle), str(path)], expect=2)
    err = res.stderr.strip().splitlines()
    assert err[-1].startswith("error: ") and needle in err[-1] and "Traceback" not in res.stderr


# ---------------------------------------------------------------- frames through the Python API


@pytest.mark.parametrize("frame,needle", [
    (None, "got None"),
    (np.zeros((0, 0, 3), np.uint8), "empty 0x0 image"),
    (np.zeros((5, 0, 3), np.uint8), "empty 5x0 image"),
    (np.zeros((8, 8), np.uint8), "COLOR_GRAY2BGR"),
    (np.zeros((8, 8, 4), np.uint8), "COLOR_BGRA2BGR"),
    (np.zeros((8, 8, 3), np.float32), "got dtype float32"),
    (np.zeros((1, 8, 8, 3), np.uint8), "classify_batch"),
    ([[1, 2]], "got list"),
    ("photo.jpg", "read_image"),
])
def test_classify_bad_frame_is_a_usage_error(googlenet_bundle, frame, needle):
    import edgekit

    with edgekit.load(googlenet_bundle) as clf:
        with pytest.raises(UsageError, match=needle):
            clf.classify(frame)
        with pytest.raises(UsageError, match="got no images"):
            clf.classify_batch([])
        assert clf.classify(np.zeros((1, 1, 3), np.uint8)).label  # the smallest real frame works


# ---------------------------------------------------------------- model sizes


def _edited_copy(bundle: Path, tmp_path: Path, edit) -> Path:
    out = tmp_path / "edited"
    shutil.copytree(bundle, out)
    man = json.loads((out / "manifest.json").read_text())
    edit(man)
    (out / "manifest.json").write_text(json.dumps(man))
    return out


def _set_pre(man, size):
    man["preprocess"]["height"] = man["preprocess"]["width"] = size


def _set_pre_and_input(man, size):
    _set_pre(man, size)
    man["input"]["shape"][1] = man["input"]["shape"][2] = size


@pytest.mark.parametrize("edit,needle", [
    (_set_pre, "its input shape in manifest.json takes 224x224"),
    (_set_pre_and_input, "the model file takes 224x224"),
])
def test_preprocess_size_disagreeing_with_the_model(googlenet_bundle, tmp_path, edit, needle):
    import edgekit

    bundle = _edited_copy(googlenet_bundle, tmp_path, lambda m: edit(m, 200))
    with pytest.raises(BundleError, match=f"makes 200x200 images but {needle}"):
        edgekit.load(bundle, backend="onnxruntime")
    res = run(["classify", str(bundle)], expect=2)
    assert "re-export the bundle" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("size,needle", [
    ("0", "cannot take 0x0 input"),
    ("100000", "beyond edgekit's limit of 1024"),
])
def test_export_input_size_out_of_range(tmp_path, size, needle):
    res = run(["export", "-m", "googlenet", "-w", "random", "--input-size", size, "-o", str(tmp_path / "x")],
              expect=2)
    assert needle in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def googlenet_state_dict():
    from edgekit.zoo.registry import get_spec

    return get_spec("googlenet").builder(3, 224).state_dict()


def test_zero_class_checkpoint_is_a_weights_error(googlenet_state_dict, tmp_path):
    import torch

    from edgekit.zoo.registry import get_spec
    from edgekit.zoo.weights import build

    sd = dict(googlenet_state_dict, **{"fc.weight": torch.zeros(0, 1024), "fc.bias": torch.zeros(0)})
    path = tmp_path / "zero.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"classifier 'fc.weight' has 0 outputs.*torch.nn.Linear\(1024, N\)"):
        build(get_spec("googlenet"), str(path))
    res = run(["export", "-m", "googlenet", "-w", str(path), "-o", str(tmp_path / "x")], expect=2)
    assert "has 0 outputs" in res.stderr and "Traceback" not in res.stderr
    sd["fc.weight"] = torch.zeros(())
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"has shape \(\), not \(classes, features\)"):
        build(get_spec("googlenet"), str(path))


# ---------------------------------------------------------------- profiles


@pytest.fixture
def broken_user_profile(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir()
    path = folder / "mine.yaml"
    path.write_text("extends: jetson-orin-nano\nname: my-orin\nmemory_gb: [abc]\n")
    monkeypatch.setenv("EDGEKIT_PROFILES", str(folder))
    return path


def test_broken_user_profile_named_is_an_error_naming_file_and_key(broken_user_profile):
    from edgekit import profiles

    with pytest.raises(UsageError, match=r"mine.yaml: key 'memory_gb\[0\]' must be a positive number"):
        profiles.get("mine")
    with pytest.raises(UsageError, match=r"mine.yaml: key 'memory_gb\[0\]'"):
        profiles.get(str(broken_user_profile))
    with pytest.raises(UsageError, match=r"unknown profile 'my-orin'.*ignored a broken user profile.*memory_gb"):
        profiles.get("my-orin")


def test_broken_user_profile_does_not_break_other_commands(broken_user_profile, googlenet_bundle):
    from edgekit import profiles

    here, _ = profiles.detect()
    assert here.name
    assert "my-orin" not in {p.name for p in profiles.all_profiles()}
    assert any("mine.yaml" in line and "memory_gb[0]" in line for line in profiles.skipped())
    res = run(["classify", str(googlenet_bundle), "--topk", "1"])
    assert "Traceback" not in res.stderr
    res = run(["profiles"])
    assert "jetson-orin-nano" in res.stdout
    assert "warning: ignored a broken user profile" in res.stderr and "mine.yaml" in res.stderr  # said, once
    assert res.stderr.count("ignored a broken user profile") == 1


@pytest.mark.parametrize("text,needle", [
    ("memory_gb: [{}]", "memory_gb[0]' must be a positive number"),
    ("memory_gb: [-4]", "memory_gb[0]' must be a positive number"),
    ("camera: {width: 0}", "camera.width' must be at least 1"),
])
def test_profile_values_validated(tmp_path, text, needle):
    from edgekit import profiles

    path = tmp_path / "p.yaml"
    path.write_text(f"extends: jetson-orin-nano\n{text}\n")
    with pytest.raises(UsageError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        profiles.load_file(path)
