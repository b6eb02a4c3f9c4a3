"""edgekit installs where the Jetsons are: the built wheel's device-tier install resolves for
Python 3.8 on manylinux aarch64 (JetPack 5: Xavier NX, AGX Xavier, Orin) with pip's resolver,
wheels only, against PyPI. ``make test-floors`` runs the code on those floors."""

from __future__ import annotations

import json
import re
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


@pytest.mark.parametrize("extra", ["gpu", "jetson"])
def test_jetpack5_gets_cuda_python_11(extra):
    """JetPack 5 (Python 3.8 on aarch64) has a CUDA 11.4 driver; cuda-python 12 needs driver
    525.60.13 or later. pip's --platform does not set platform_machine for markers, so the
    markers are evaluated here for each environment."""
    import tomllib
    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
            ["optional-dependencies"][extra]]

    def cuda_python(python: str, machine: str) -> str:
        env = {"python_version": python, "python_full_version": python + ".0", "platform_machine": machine,
               "extra": extra}
        got = [str(r.specifier) for r in reqs
               if r.name == "cuda-python" and (r.marker is None or r.marker.evaluate(env))]
        assert len(got) == 1, got
        return got[0]

    assert set(cuda_python("3.8", "aarch64").split(",")) == {">=11.8", "<12"}  # JetPack 5
    for python, machine in [("3.10", "aarch64"), ("3.12", "aarch64"), ("3.8", "x86_64"), ("3.11", "x86_64")]:
        assert cuda_python(python, machine) == ">=11.8", (python, machine)


def _extras_named(text: str) -> set[str]:
    """Every extra in an install command: edgekit[...], ".[...]" (a clone), ...whl[...] (a wheel)."""
    found: set[str] = set()
    for group in re.findall(r"(?:\bedgekit|(?<![\w.])\.|\.whl)\[([a-z][a-z0-9_-]*(?:, ?[a-z][a-z0-9_-]*)*)\]", text):
        found |= {x.strip() for x in group.split(",") if x.strip()}
    return found


def test_every_extra_the_readme_and_messages_name_exists():
    """`pip install "edgekit[device]"` with no such extra installs the base alone, with a mere warning: the
    README, the Makefile, pyproject's own extras and edgekit's messages name only extras pyproject defines."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    defined = set(project["optional-dependencies"])
    sources = [REPO / "README.md", REPO / "Makefile", *sorted((REPO / "edgekit").rglob("*.py"))]
    named = {p.relative_to(REPO).as_posix(): _extras_named(p.read_text(encoding="utf-8")) for p in sources}
    requirements = [r for rs in project["optional-dependencies"].values() for r in rs]
    named["pyproject.toml"] = _extras_named("\n".join(requirements))  # desktop = ["edgekit[cpu,export,...]"]
    assert named["README.md"] >= {"desktop", "cpu", "export", "video", "gpu", "jetson", "train"}  # it finds them
    missing = {f: sorted(n - defined) for f, n in named.items() if n - defined}
    assert not missing, f"extras not in pyproject.toml ({sorted(defined)}): {missing}"


def test_the_readme_names_the_wheel_that_pip_wheel_writes():
    """The wheel file the README tells you to install is the one this version builds (name-version-py3-none-any)."""
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    wheels = set(re.findall(r"edgekit-([\w.+]+)-py3-none-any\.whl", (REPO / "README.md").read_text(encoding="utf-8")))
    assert wheels == {version}


def test_extras_parser():
    text = ('pip install "edgekit[cpu, jetson]" ".[desktop,gpu]" "dist/edgekit-0.1.0-py3-none-any.whl[train]" '
            "a.b[x] d[0] myedgekit[y]")
    assert _extras_named(text) == {"cpu", "jetson", "desktop", "gpu", "train"}
