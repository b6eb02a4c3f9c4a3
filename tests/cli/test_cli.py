"""Every command through click's runner, and every bad input named in the issue."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgekit.cli import cli, main


def run(args, expect=0):
    """Invoke through main() so the one error handler runs; return (exit code, stdout, stderr)."""
    res = CliRunner().invoke(_main_wrapper, args, catch_exceptions=False)
    assert res.exit_code == expect, (res.exit_code, res.stdout, res.stderr)
    return res


import click  # noqa: E402


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def _main_wrapper(ctx):
    main(list(ctx.args))


def test_help_has_examples_for_every_command():
    runner = CliRunner()
    for name, _cmd in cli.commands.items():
        res = runner.invoke(cli, [name, "--help"])
        assert res.exit_code == 0, name
        assert "Example" in res.output and f"edgekit {name}" in res.output, name


def test_models_table_and_json():
    res = run(["models"])
    assert "inception_resnet_v2" in res.stdout and "Inception v2" in res.stdout and "55.8 M" in res.stdout
    data = json.loads(run(["models", "--json"]).stdout)
    assert len(data) == 6 and {"name", "input_size", "params_m", "weights"} <= set(data[0])


def test_export_inspect_classify(tmp_path):
    out = tmp_path / "g"
    res = run(["export", "--model", "googlenet", "--weights", "random", "-o", str(out)])
    assert str(out) in res.stdout and "parity" in res.stderr
    res = run(["inspect", str(out)])
    assert "googlenet (Inception v1)" in res.stdout and "passed" in res.stdout and "ok" in res.stdout
    data = json.loads(run(["inspect", str(out), "--json"]).stdout)
    assert data["model"]["name"] == "googlenet"
    res = run(["classify", str(out), "--topk", "3", "--json"])
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(lines) >= 2 and all(len(x["top"]) == 3 for x in lines)


def test_default_output_dir_and_latest(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_BUILD_DIR", str(tmp_path / "build"))
    run(["export", "-m", "googlenet", "-w", "random"])
    assert (tmp_path / "build" / "googlenet-fp32" / "manifest.json").is_file()
    assert "googlenet" in run(["inspect"]).stdout  # finds the latest on its own


@pytest.mark.parametrize("args,code,needle", [
    (["export", "-m", "incepton_v4"], 2, "did you mean 'inception_v4'"),
    (["export", "-m", "googlenet", "-w", "missing.pth"], 2, "missing.pth does not exist"),
    (["export", "-m", "googlenet", "-w", "bogus"], 2, "unknown weights 'bogus'"),
    (["export", "-m", "inception_v3", "-w", "random", "--input-size", "50"], 2, "cannot take 50x50"),
    (["export", "-m", "googlenet", "-w", "random", "--batch", "0"], 2, "--batch must be at least 1"),
    (["export", "-m", "inception_resnet_v1"], 2, "no published ImageNet weights"),
    (["export", "-m", "googlenet", "--mean", "1,2"], 2, "three comma-separated numbers"),
    (["export", "-m", "googlenet", "-w", "random", "--labels", "nope.txt"], 2, "labels file nope.txt does not exist"),
    (["inspect", "/nonexistent/bundle"], 2, "is not a bundle"),
    (["classify", "/nonexistent/bundle"], 2, "/nonexistent/bundle does not exist"),
])
def test_bad_input_is_one_clear_line(args, code, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run(args, expect=code)
    err = res.stderr.strip()
    assert needle in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]  # click's usage errors too
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "build").exists()


def test_imagenet_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    res = run(["export", "-m", "inception_v4", "-o", str(tmp_path / "x")], expect=1)
    assert "cannot download inception_v4 ImageNet weights" in res.stderr and "--weights PATH" in res.stderr
    assert not (tmp_path / "x").exists()


def test_existing_output_needs_force(googlenet_bundle):
    res = run(["export", "-m", "googlenet", "-w", "random", "-o", str(googlenet_bundle)], expect=2)
    assert "pass --force" in res.stderr


def test_corrupt_image_is_clear(googlenet_bundle, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    res = run(["classify", str(googlenet_bundle), str(bad)], expect=2)
    assert "cannot decode image" in res.stderr


def test_python_dash_m_and_console_script(tmp_path):
    res = subprocess.run([sys.executable, "-m", "edgekit", "models"], capture_output=True, text=True, check=True)
    assert "googlenet" in res.stdout
    res = subprocess.run([sys.executable, "-m", "edgekit", "export", "-m", "nope"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error: unknown model 'nope'")


def test_progress_is_a_bar_on_a_terminal_and_one_line_in_a_log(monkeypatch, capsys):
    import sys

    from edgekit.cli import _ProgressBar

    for tty in (True, False):
        monkeypatch.setattr(sys.stderr, "isatty", lambda tty=tty: tty)
        bar = _ProgressBar("calibrating")
        for k in range(1, 11):
            bar(k, 10)
        err = capsys.readouterr().err
        if tty:
            assert err.count("\r") == 10 and "ETA" in err
        else:
            assert "\r" not in err and err.count("\n") == 1 and "10/10 images" in err


def test_a_mistyped_profile_gets_a_suggestion():
    from edgekit import profiles
    from edgekit.errors import UsageError

    with pytest.raises(UsageError, match="did you mean jetson-orin-nano"):
        profiles.get("jetson-orin-nan")
