"""What a new user trips over in the first hour (issue 17), each as the user meets it on the command
line: a failed gate keeps the export and the rerun goes on from it, too few images are refused with
the numbers needed, requests this machine cannot honour fail before any work, every command that
takes a bundle may leave it out (and says which it took), and one table of exit codes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from edgekit import errors  # noqa: E402
from tests.inproc import edgekit  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"


def _one_line_error(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def _photos(root: Path, n: int, size: int = 72) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    for k in range(n):
        cv2.imwrite(str(root / f"{k:03d}.png"), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return root


@pytest.fixture
def cpu_only(monkeypatch):
    """This machine as one without an NVIDIA GPU (as CI's is), wherever the test runs."""
    from edgekit import profiles

    monkeypatch.setattr(profiles, "detect", lambda root=None: (profiles.get("cpu"), profiles.Device()))


def test_a_failed_gate_keeps_the_export_and_the_rerun_goes_on_from_it(tmp_path, monkeypatch, cpu_only):
    monkeypatch.chdir(tmp_path)
    cmd = ["build", "--model", "googlenet", "--weights", "random", "--input-size", "96", "--int8", "-o", "build/gi"]
    first = edgekit(*cmd)
    assert first.returncode == errors.GATE_FAILED, first.stderr
    line = _one_line_error(first)
    assert "accuracy gate failed" in line and "random weights" in line and "--weights imagenet" in line
    assert "build/gi (just exported, parity checked) is kept" in line
    assert sorted(p.name for p in (tmp_path / "build" / "gi").iterdir()) == ["labels.txt", "manifest.json",
                                                                             "model.onnx"]
    before = (tmp_path / "build" / "gi" / "model.onnx").stat().st_mtime_ns
    # the same command again: no "already exists", no second export
    again = edgekit(*cmd, "--min-agreement", "0")
    assert again.returncode == 0, again.stderr
    assert "going on from the bundle exported earlier" in again.stderr and "exporting to ONNX" not in again.stderr
    assert (tmp_path / "build" / "gi" / "model.onnx").stat().st_mtime_ns == before
    assert (tmp_path / "build" / "gi" / "model.int8.onnx").is_file()
    # another export to the same place is not silently reused
    other = edgekit(*cmd[:6], "128", *cmd[7:])
    assert other.returncode == errors.USAGE
    assert "already exists and is another export (its input is 96x96, not 128x128)" in _one_line_error(other)


@pytest.mark.parametrize("args,said", [
    (["--int8", "--fp16", "--fp32"], "--int8, --fp16 and --fp32 given: an engine has one precision"),
    (["--fp16", "--fp32"], "--fp16 and --fp32 given"),
    (["--fp16", "--dla", "0"], "--dla shapes a TensorRT engine, and none is built"),
    (["--int8", "--workspace", "512", "--rebuild"], "--workspace, --rebuild shape a TensorRT engine"),
])
def test_what_this_machine_cannot_do_fails_before_any_work(googlenet_bundle, tmp_path, cpu_only, args, said):
    b = tmp_path / "b"
    shutil.copytree(googlenet_bundle, b)
    before = sorted(p.name for p in b.iterdir())
    res = edgekit("build", b, *args)
    assert res.returncode == errors.USAGE and said in _one_line_error(res)
    assert "calibrat" not in res.stderr.replace(said, "")  # nothing started
    assert sorted(p.name for p in b.iterdir()) == before


def test_too_few_images_are_refused_with_the_numbers_needed(googlenet_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(googlenet_bundle, b)
    res = edgekit("calibrate", b, "--data", _photos(tmp_path / "three", 3))
    assert res.returncode == errors.USAGE
    line = _one_line_error(res)
    assert "too few images" in line and "at least 16 to calibrate and 10 to validate" in line
    assert "add images to" in line and "(about 50 or more in all with --holdout 0.2), or give --val-data DIR" in line
    assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in googlenet_bundle.iterdir())
    # edgekit's own photographs are not the user's to add to: the way on is their own images
    res = edgekit("calibrate", b, "--holdout", "0.05")
    assert res.returncode == errors.USAGE and "give your own images: --calib-data DIR" in _one_line_error(res)
    # a laxer gate needs more images to be able to fail: said, with the number, but not refused
    res = edgekit("calibrate", b, "--data", _photos(tmp_path / "sixty", 60), "--min-agreement", "0.9",
                  "--num-images", "16")
    assert "only from 36 images" in res.stderr and res.returncode in (0, errors.GATE_FAILED), res.stderr


def test_every_command_that_takes_a_bundle_may_leave_it_out_and_says_which(googlenet_bundle, tmp_path, monkeypatch,
                                                                            cpu_only):
    monkeypatch.setenv("EDGEKIT_BUILD_DIR", str(tmp_path / "build"))
    shutil.copytree(googlenet_bundle, tmp_path / "build" / "older")
    shutil.copytree(googlenet_bundle, tmp_path / "build" / "newest")
    newest = tmp_path / "build" / "newest"
    (newest / "manifest.json").touch()
    photo = sorted((Path(__file__).resolve().parents[2] / "edgekit" / "data" / "samples").glob("*.jpg"))[0]
    labelled = tmp_path / "labelled" / "0"
    labelled.mkdir(parents=True)
    shutil.copy(photo, labelled / photo.name)
    said = f"bundle: {newest} (the most recently built"
    for args in (["inspect"], ["classify", photo], ["classify"], ["eval", "--data", labelled.parent, "--class-map",
                                                                   _class_map(tmp_path)],
                 ["run", "--source", labelled, "--max-frames", "1"],
                 ["bench", "--runs", "1", "--seconds", "0", "--warmup", "0", "--precision", "fp32"],
                 ["export-triton", "-o", tmp_path / "triton"], ["export-deepstream", "-o", tmp_path / "ds"],
                 ["calibrate", "--data", _photos(tmp_path / "few", 3)],
                 ["build", "--int8", "--calib-data", tmp_path / "few"]):
        res = edgekit(*args)
        assert said in res.stderr, (args, res.stderr)
        if args[0] in ("inspect", "classify", "eval", "run", "bench", "export-triton", "export-deepstream"):
            assert res.returncode == 0, (args, res.stderr)
    # a first argument that is not a directory is an image, not a bundle
    res = edgekit("classify", photo)
    assert res.returncode == 0 and photo.name in res.stdout
    # with nothing built yet, the error says how to make one
    monkeypatch.setenv("EDGEKIT_BUILD_DIR", str(tmp_path / "empty"))
    res = edgekit("inspect")
    assert res.returncode == errors.USAGE and "edgekit export --model NAME" in _one_line_error(res)


def _class_map(tmp_path: Path) -> Path:
    p = tmp_path / "map.txt"
    p.write_text("0 0\n")
    return p


def _table(text: str) -> list[tuple[int, str]]:
    return [(int(m.group(1)), m.group(2).strip()) for m in re.finditer(r"^\|? *`?(\d+)`? *\| *([^|\n]+)", text, re.M)]


def test_one_table_of_exit_codes_documented_and_used(googlenet_bundle, tmp_path):
    readme = README.read_text(encoding="utf-8")
    section = readme[readme.index("## Exit codes"):]
    section = section[:section.index("\n## ", 4)] if "\n## " in section[4:] else section
    documented = {code for code, _ in _table(section)}
    assert documented == {0, errors.FAILED, errors.USAGE, errors.MISSING_DEPENDENCY, errors.GATE_FAILED,
                          errors.INTERRUPTED}
    doc = errors.__doc__ or ""
    assert {int(c) for c in re.findall(r"^(\d+) ", doc, re.M)} == documented
    ckpt = tmp_path / "bad.pth"
    ckpt.write_bytes(b"")
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = [
        (["inspect", folder], errors.USAGE),  # not a bundle
        (["export", "--model", "inceptoin_v3"], errors.USAGE),  # unknown model
        (["classify", googlenet_bundle, tmp_path / "missing.jpg"], errors.USAGE),  # missing image
        (["classify", googlenet_bundle, ckpt], errors.USAGE),  # unreadable image
        (["export", "--model", "googlenet", "--weights", tmp_path / "missing.pth"], errors.USAGE),
        (["export", "--model", "googlenet", "--weights", ckpt, "-o", tmp_path / "x"], errors.USAGE),
        (["profiles", "show", "jetson-orin-nanoo"], errors.USAGE),
        (["eval", googlenet_bundle, "--data", tmp_path / "nothere"], errors.USAGE),  # was a traceback
        (["eval", googlenet_bundle, "--data", folder, "--class-map", tmp_path / "nomap.txt"], errors.USAGE),
        # a missing --calib-data is found before the export, not after it
        (["build", "--model", "googlenet", "--weights", "random", "--int8", "--calib-data", tmp_path / "nothere",
          "-o", tmp_path / "y"], errors.USAGE),
    ]
    for args, code in cases:
        res = edgekit(*args)
        assert res.returncode == code, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) >= 1 and res.stderr.count("Traceback") == 0
    assert not (tmp_path / "y").exists()
    assert "did you mean jetson-nano or jetson-orin-nano?" in edgekit("profiles", "show", "nano").stderr
    # nothing is wrong with a bundle another process is changing: 1, run again later
    b = tmp_path / "b"
    shutil.copytree(googlenet_bundle, b)
    code = ("import sys; from edgekit import bundle as b\n"
            "with b.lock(b.Path(sys.argv[1])):\n print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(b)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        res = edgekit("calibrate", b, "--data", _photos(tmp_path / "photos", 60))
    finally:
        holder.communicate("", timeout=60)
    assert res.returncode == errors.FAILED and "is being changed by" in _one_line_error(res)


def test_run_says_a_file_skipped_frames_and_deepstream_says_what_its_onnx_is(googlenet_bundle, tmp_path, cpu_only):
    clip = tmp_path / "fast.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 1000.0, (64, 48))
    for k in range(300):
        w.write(np.full((48, 64, 3), k % 256, np.uint8))
    w.release()
    res = edgekit("run", googlenet_bundle, "--source", clip)
    assert res.returncode == 0, res.stderr
    assert "--every-frame classifies them all" in res.stderr  # a googlenet frame takes far more than 1 ms here
    res = edgekit("export-deepstream", googlenet_bundle, "-o", tmp_path / "ds", "--precision", "fp16")
    assert res.returncode == 0, res.stderr
    assert "note: googlenet.float.onnx is the FP32 graph; nvinfer builds it as FP16 (network-mode 2)" in res.stderr


def test_fp16_builds_calibrate_no_int8_and_say_what_the_device_must_run(googlenet_bundle, tmp_path, cpu_only):
    b = tmp_path / "b"
    shutil.copytree(googlenet_bundle, b)
    # ahead of time for a Xavier NX (TensorRT-RTX here cannot build for it): FP16 alone is made and gated, and the
    # command for the board keeps every engine option given here
    res = edgekit("build", b, "--fp16", "--profile", "jetson-xavier-nx", "--dla", "0", "--batch", "1",
                  "--workspace", "512")
    assert res.returncode == 0, res.stderr
    assert "run there: edgekit build b --fp16 --dla 0 --batch 1 --workspace 512" in res.stderr
    assert (b / "model.fp16.onnx").is_file() and not (b / "model.int8.onnx").exists()
    assert "fp16" in edgekit("inspect", b).stdout
    # trtexec's habit: --int8 --fp16 is INT8, said once; a calibrated bundle is reused unless asked again
    res = edgekit("build", b, "--int8", "--fp16", "--min-agreement", "0")
    assert res.returncode == 0 and "note: --int8 --fp16 builds INT8" in res.stderr
    assert (b / "model.int8.onnx").is_file()
    res = edgekit("build", b, "--int8")
    assert res.returncode == 0 and "holds INT8 already (entropy on 80 images)" in res.stderr
    assert "calibrating (" not in res.stderr


def test_a_device_without_importable_tensorrt_is_exit_3_with_the_way_to_get_it(googlenet_bundle, tmp_path,
                                                                                 monkeypatch):
    from edgekit import deps, profiles

    monkeypatch.setattr(profiles, "detect", lambda root=None: (profiles.get("jetson-orin-nano"),
                                                                profiles.Device(model="NVIDIA Jetson Orin Nano")))
    monkeypatch.setattr(deps, "available", lambda module: False)
    res = edgekit("build", googlenet_bundle, "--fp32")
    assert res.returncode == errors.MISSING_DEPENDENCY
    line = _one_line_error(res)
    assert "python3-libnvinfer" in line and "--system-site-packages" in line


def test_force_never_replaces_a_folder_that_edgekit_did_not_write(tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    res = edgekit("export", "--model", "googlenet", "--weights", "random", "--input-size", "64", "-o", mine, "--force")
    assert res.returncode == errors.USAGE and "holds files and no manifest.json" in _one_line_error(res)
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    res = edgekit("build", "--model", "googlenet", "--weights", "random", "--input-size", "64", "-o", mine)
    line = _one_line_error(res)
    assert res.returncode == errors.USAGE and "not a bundle" in line and "--force" not in line


def test_sigterm_is_an_interruption_like_ctrl_c(tmp_path):
    out = tmp_path / "x"
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "export", "--model", "googlenet", "--weights", "random",
                             "--input-size", "64", "-o", str(out)], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # once the work is under way
        if line.startswith("exporting to ONNX"):
            break
    proc.terminate()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == errors.INTERRUPTED, err
    assert "interrupted; nothing was left half-written" in err and "Traceback" not in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_crafted_bundles_proxies_and_folders_are_one_line(googlenet_bundle, tmp_path, monkeypatch):
    loop = tmp_path / "loop"
    shutil.copytree(googlenet_bundle, loop)
    (loop / "labels.txt").unlink()
    (loop / "labels.txt").symlink_to("labels.txt")
    res = edgekit("classify", loop)
    assert res.returncode == errors.USAGE and "labels.txt" in _one_line_error(res)
    # a damaged export is not gone on from
    b = tmp_path / "build" / "gi"
    shutil.copytree(googlenet_bundle, b)
    with open(b / "model.onnx", "r+b") as f:
        f.truncate(1000)
    res = edgekit("build", "--model", "googlenet", "--weights", "random", "--int8", "-o", b)
    assert res.returncode == errors.USAGE and "is another export" in _one_line_error(res)
    assert "sha256" in _one_line_error(res)
    # a folder of images, and a name that is not there
    photos = Path(__file__).resolve().parents[2] / "edgekit" / "data" / "samples"
    res = edgekit("classify", googlenet_bundle, photos)
    assert res.returncode == 0 and res.stdout.count(" ms)") == len(list(photos.glob("*.jpg")))
    res = edgekit("classify", tmp_path / "nosuch")
    assert res.returncode == errors.USAGE and "nosuch does not exist" in _one_line_error(res)
    # a proxy setting that is not a URL: its password is never shown
    monkeypatch.delenv("EDGEKIT_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HTTPS_PROXY", "http://alice:s3cret@[::1")
    res = edgekit("export", "--model", "googlenet", "--input-size", "64", "-o", tmp_path / "w")
    assert res.returncode == errors.USAGE and "proxy setting" in _one_line_error(res)
    assert "s3cret" not in res.stderr + res.stdout
