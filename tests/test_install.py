"""edgekit installs where the Jetsons are: the built wheel's device-tier install resolves for
Python 3.8 on manylinux aarch64 (JetPack 5: Xavier NX, AGX Xavier, Orin) with pip's resolver,
wheels only, against PyPI. ``make test-floors`` runs the code on those floors."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("extras", ["", "[jetson]", "[cpu,jetson]"])
def test_device_tier_resolves_for_python_38_on_aarch64(tmp_path, extras):
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable from here: the resolution needs the index (CI reaches it)")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("edgekit-*.whl"))
    report = tmp_path / "report.json"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                          "--report", str(report), "--python-version", "3.8", "--platform", "manylinux2014_aarch64",
                          "--only-binary=:all:", "--target", str(tmp_path / "t"), f"{wheel}{extras}"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert {"edgekit", "numpy", "onnx", "click", "pyyaml"} <= set(got)
    assert "torch" not in got and "opencv-python-headless" not in got  # JetPack's own stay unshadowed
    if "jetson" in extras:
        assert "cuda-python" in got
