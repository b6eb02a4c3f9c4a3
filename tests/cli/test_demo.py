"""make demo, as a new user reads it: where the calibration images come from, the agreement figures
once, which INT8 model the INT8 column is, the stream introduced, the clip kept out of the bundle,
and at the end where the bundle is, how to reach the command and what to type next.

One run of the demo on googlenet (the smallest model; random weights, tests are offline) with a
1 s clip: about 15 s on two quiet cores, a minute when they are shared."""

from __future__ import annotations

import re
import shlex
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("cv2")

from edgekit.cli import cli, demo  # noqa: E402  (demo: the module; its globals are patched below)
from edgekit.images import IMAGE_SUFFIXES  # noqa: E402
from edgekit.quant import calibdata  # noqa: E402


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory):
    """edgekit demo on googlenet (export, INT8 calibration, classify, a 1 s stream)"""
    root = tmp_path_factory.mktemp("demo")
    out = root / "demo"
    say: list[str] = []
    note: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo, "CLIP_SECONDS_EACH", 0.25)  # 1 s of video instead of 6: the same lines
        mp.setenv("PATH", "/usr/bin:/bin")  # as under make: the venv's bin is not on PATH
        demo.run_demo("googlenet", out, say.append, note.append)
    return root, out, say, note


def test_the_clip_is_beside_the_bundle_not_inside(ran):
    root, out, say, _ = ran
    assert not list(out.rglob("*.avi"))
    assert (root / "demo-clip.avi").is_file()
    intro = next(x for x in say if x.startswith("== 4/4"))
    assert "a stream" in intro and str(root / "demo-clip.avi") in intro
    assert say.index(intro) < next(i for i, x in enumerate(say) if x.startswith("  stream frame"))


def test_the_calibration_images_are_explained(ran):
    _, _, say, note = ran
    photos = sum(1 for p in calibdata.default_set().iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    said = re.search(r"calibrating \(\w+\) on (\d+) images; validating on (\d+)", "\n".join(note))
    assert said, note
    cal, val = int(said[1]), int(said[2])
    m = re.search(r"(\d+) \+ (\d+) images = (\d+) photographs x (\d+) crops", "\n".join(say))
    assert m, say
    assert (int(m[1]), int(m[2]), int(m[3])) == (cal, val, photos)
    assert int(m[3]) * int(m[4]) == cal + val


def test_agreement_figures_are_shown_once(ran):
    _, _, say, note = ran
    lines = [x for x in say + note if "top-1 agreement" in x]
    forms = [x.split(" vs FP32")[0] for x in lines]
    assert lines and len(forms) == len(set(forms)), lines


def test_the_int8_column_names_its_model(ran):
    _, out, say, _ = ran
    head = next(x for x in say if x.startswith("== 3/4"))
    assert "INT8 (model.int8-cpu.onnx" in head and "FP32 (model.onnx)" in head
    assert (out / "model.int8-cpu.onnx").is_file()


def test_the_last_lines_name_the_bundle_the_venv_and_three_next_commands(ran):
    _, out, say, _ = ran
    in_venv = sys.prefix != sys.base_prefix  # then the hint says how to reach its edgekit
    tail = say[-6:] if in_venv else say[-5:]
    assert tail[0].startswith(f"the bundle is {out}/ (") and ".avi" not in tail[0]
    if in_venv:
        assert "/bin/activate" in tail[1] and "/bin/edgekit" in tail[1]
    assert tail[-4] == "next:"
    commands = [shlex.split(x.split("#")[0]) for x in tail[-3:]]
    assert [c[:2] for c in commands] == [["edgekit", "classify"], ["edgekit", "run"], ["edgekit", "build"]]
    assert str(out) in commands[0] and str(out) in commands[1]
    for c in commands:  # every option the advice names exists
        cmd = cli.commands[c[1]]
        known = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert {a for a in c[2:] if a.startswith("-")} <= known, c
