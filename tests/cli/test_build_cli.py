"""edgekit build --model takes every option of edgekit export (one shared definition), and an
export from a checkpoint says what normalisation it assumed."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from tests.cli.test_cli import run


def _options(cmd: click.Command) -> dict[str, click.Option]:
    return {name: p for p in cmd.params if isinstance(p, click.Option) for name in p.opts}


def test_every_export_option_exists_on_build():
    export, build = _options(cli.commands["export"]), _options(cli.commands["build"])
    missing = sorted(set(export) - set(build))
    assert not missing, f"edgekit build lacks export's {missing}"
    # one definition: same help and type, except --batch (build's is the engine's N|MIN:OPT:MAX range)
    for name, opt in export.items():
        if name == "--batch":
            continue
        other = build[name]
        assert (opt.help, opt.is_flag, type(opt.type)) == (other.help, other.is_flag, type(other.type)), name


def test_build_help_lists_export_options():
    res = CliRunner().invoke(cli, ["build", "--help"])
    for flag in ("--labels", "--input-size", "--mean", "--std", "--float-input", "--batch"):
        assert flag in res.output


@pytest.fixture(scope="module")
def finetuned_checkpoint(tmp_path_factory):
    """A 3-class GoogLeNet state_dict, as a fine-tune from torchvision would save it."""
    import torch

    from edgekit.zoo.registry import get_spec

    folder = tmp_path_factory.mktemp("finetune")
    path = folder / "parts.pth"
    torch.save(get_spec("googlenet").builder(3, 64).state_dict(), path)
    (folder / "labels.txt").write_text("bolt\nnut\nwasher\n")
    return path


def test_build_model_with_labels_and_sizes_in_one_step(finetuned_checkpoint, tmp_path):
    out = tmp_path / "parts"
    res = run(["build", "--model", "googlenet", "--weights", str(finetuned_checkpoint),
               "--labels", str(finetuned_checkpoint.parent / "labels.txt"), "--input-size", "64",
               "--float-input", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--fp32",
               "-o", str(out)])
    assert str(out) in res.stdout  # the bundle (no TensorRT here) or the engine in it
    man = json.loads((out / "manifest.json").read_text())
    assert (out / "labels.txt").read_text().split() == ["bolt", "nut", "washer"]
    assert man["input"]["dtype"] == "float32" and man["input"]["shape"][2:] == [64, 64]
    assert man["preprocess"]["mean"] == [0.485, 0.456, 0.406] and man["preprocess"]["std"] == [0.229, 0.224, 0.225]
    assert "does not record its normalisation" not in res.stderr  # both given: nothing assumed


def test_checkpoint_export_prints_the_normalisation_it_assumed(finetuned_checkpoint, tmp_path):
    res = run(["export", "--model", "googlenet", "--weights", str(finetuned_checkpoint), "--input-size", "64",
               "--labels", str(finetuned_checkpoint.parent / "labels.txt"), "-o", str(tmp_path / "b")])
    notes = [ln for ln in res.stderr.splitlines() if "does not record its normalisation" in ln]
    assert len(notes) == 1, res.stderr
    note = notes[0]
    assert "assumed --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5" in note and "transform_input=True" in note
    assert "--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225" in note
    assert note not in res.stdout


def test_build_bundle_refuses_export_options(googlenet_bundle):
    res = run(["build", str(googlenet_bundle), "--labels", "x.txt", "--fp32"], expect=2)
    assert "--labels apply to --model" in res.stderr
