"""edgekit installs where the Jetsons are: the built wheel's device-tier install resolves for
Python 3.8 on manylinux aarch64 (JetPack 5: Xavier NX, AGX Xavier, Orin) with pip's resolver,
wheels only, against PyPI, and the JetPack 6 line takes a cuda-python its driver runs. The
extras the README names exist; `make demo`/`make test` stop on a Jetson before installing a
desktop's .venv. ``make test-floors`` runs the code on those floors."""

from __future__ import annotations

import json
import os
import re
import shutil
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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """edgekit's wheel, built once from this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(REPO)], check=True, capture_output=True, timeout=300)
    return next(out.glob("edgekit-*.whl"))


def test_the_wheel_holds_every_file_of_the_package(wheel):
    """Every module of every stage folder, the profiles, the photographs and the default calibration set (with the
    README that carries their licences) reach a board that installs the wheel, not only a source checkout."""
    import zipfile

    tracked = subprocess.run(["git", "ls-files", "edgekit"], cwd=REPO, capture_output=True, text=True, check=True)
    want = set(tracked.stdout.split())
    with zipfile.ZipFile(wheel) as zf:
        have = {n for n in zf.namelist() if n.startswith("edgekit/")}
    assert len(want) > 100 and "edgekit/runtime/loader.py" in want
    assert not want - have, f"tracked but not in the wheel: {sorted(want - have)}"
    assert {"edgekit/data/calibration/README.md", "edgekit/data/calibration/general/china.jpg"} <= have


# pip's --python-version and --platform choose wheels but do not set python_version or platform_machine for
# requirement markers (pip evaluates those for the Python running it), so the dry run patches what
# packaging's marker environment reads: pip then takes the lines pyproject.toml gives that board.
_PIP_AS = ("import platform, sys; py, machine = sys.argv[1:3]; del sys.argv[1:3]; "
           "platform.machine = lambda: machine; platform.python_version = lambda: py + '.0'; "
           "platform.python_version_tuple = lambda: tuple(py.split('.')) + ('0',); "
           "from pip._internal.cli.main import main; sys.exit(main(sys.argv[1:]))")


def _resolve(tmp_path: Path, python: str, machine: str, glibc: int, *requirements: str) -> dict[str, str]:
    """What pip installs for ``requirements`` on Python ``python``, manylinux ``machine`` up to glibc
    2.``glibc``, wheels only, from PyPI (a dry run): {name: version}."""
    report = tmp_path / "report.json"
    platforms = [a for g in range(17, glibc + 1) for a in ("--platform", f"manylinux_2_{g}_{machine}")]
    res = subprocess.run([sys.executable, "-c", _PIP_AS, python, machine, "install", "--dry-run",
                          "--ignore-installed", "-q", "--report", str(report), "--python-version", python,
                          "--platform", f"manylinux2014_{machine}", *platforms, "--only-binary=:all:",
                          "--target", str(tmp_path / "t"), *requirements],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


@pytest.mark.parametrize("extras", ["", "[jetson]", "[cpu,jetson]"])
def test_device_tier_resolves_for_python_38_on_aarch64(tmp_path, extras, wheel):
    """JetPack 5: Python 3.8, Ubuntu 20.04 (glibc 2.31), aarch64."""
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable from here: the resolution needs the index (CI reaches it)")
    got = _resolve(tmp_path, "3.8", "aarch64", 31, f"{wheel}{extras}")
    assert {"edgekit", "numpy", "onnx", "click", "pyyaml"} <= set(got)
    assert "torch" not in got and "opencv-python-headless" not in got  # JetPack's own stay unshadowed
    if "jetson" in extras:
        assert got["cuda-python"].split(".")[0] == "11", got  # its CUDA 11.4 driver


def _cuda_python_specifiers(extra: str, python: str, machine: str) -> list:
    """The cuda-python specifiers of ``extra`` whose markers hold for Python ``python`` on ``machine``."""
    import tomllib
    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
            ["optional-dependencies"][extra]]
    env = {"python_version": python, "python_full_version": python + ".0", "platform_machine": machine,
           "platform_system": "Linux", "sys_platform": "linux", "extra": extra}
    return [r.specifier for r in reqs if r.name == "cuda-python" and (r.marker is None or r.marker.evaluate(env))]


# cuda-python's major must match the driver's CUDA major: 12.x needs driver 525.60.13+, 13.x 580.65.06+
# (cuda-bindings' install docs). A Jetson's driver is JetPack's, and its Python tells which JetPack it is.
JETPACK_5 = [("3.8", "aarch64")]  # CUDA 11.4 driver
JETPACK_6 = [("3.9", "aarch64"), ("3.10", "aarch64"), ("3.11", "aarch64")]  # CUDA 12.2 (6.0), 12.6 (6.1, 6.2)
JETPACK_7 = [("3.12", "aarch64"), ("3.13", "aarch64")]  # Thor: CUDA 13
DESKTOPS = [("3.8", "x86_64"), ("3.11", "x86_64"), ("3.13", "x86_64"), ("3.11", "AMD64")]
CUDA_11, CUDA_12, CUDA_13 = ["11.8.0", "11.8.7"], ["12.0.0", "12.6.2.post1", "12.9.10"], ["13.0.0", "13.4.4", "13.9"]


@pytest.mark.parametrize("extra", ["gpu", "jetson"])
def test_cuda_python_major_fits_each_jetpack_driver(extra):
    """JetPack 5 gets 11.8.x and JetPack 6 12.x: 13.x (what an uncapped requirement resolves to,
    13.4.4 for the README's JetPack 6 line) fails in cuInit on their CUDA 11.4 / 12.x drivers. Python
    3.12+ on aarch64 (JetPack 7, CUDA 13) may take 13; desktops are left to torch's cuda-bindings
    pin (see pyproject.toml), so they admit both 12 and 13."""
    def admits(python: str, machine: str, versions: list) -> list:
        specs = _cuda_python_specifiers(extra, python, machine)
        assert len(specs) == 1, (python, machine, [str(s) for s in specs])  # exactly one line applies
        return [v for v in versions if specs[0].contains(v)]

    for env in JETPACK_5:
        assert admits(*env, CUDA_11) == CUDA_11 and admits(*env, CUDA_12 + CUDA_13) == [], env
    for env in JETPACK_6:
        assert admits(*env, CUDA_12) == CUDA_12 and admits(*env, CUDA_11 + CUDA_13) == [], env
    for env in JETPACK_7:
        assert admits(*env, CUDA_13) == CUDA_13 and admits(*env, CUDA_11) == [], env
    for env in DESKTOPS:
        assert admits(*env, CUDA_12 + CUDA_13) == CUDA_12 + CUDA_13, env


def test_cuda_python_lines_cover_every_python_and_machine_once():
    """The markers split the environments without a gap (an extra that adds nothing) or an overlap."""
    for extra in ("gpu", "jetson"):
        for minor in range(8, 16):
            for machine in ("aarch64", "x86_64", "AMD64", "arm64", "ppc64le"):
                specs = _cuda_python_specifiers(extra, f"3.{minor}", machine)
                assert len(specs) == 1, (extra, f"3.{minor}", machine, [str(s) for s in specs])


def test_jetpack6_resolves_cuda_python_12(tmp_path, wheel):
    """The README's JetPack 6 line (Python 3.10, Ubuntu 22.04: glibc 2.35, aarch64) takes cuda-python
    12; before the markers named JetPack 6 it took 13.4.4, which fails in cuInit on its CUDA 12 driver."""
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable from here: the resolution needs the index (CI reaches it)")
    got = _resolve(tmp_path, "3.10", "aarch64", 35, f"{wheel}[jetson]", "numpy<2")
    assert got["cuda-python"].split(".")[0] == "12", got
    assert got.get("cuda-bindings", "12").split(".")[0] == "12", got  # 12.6 and older bundle their bindings
    assert "torch" not in got and "opencv-python-headless" not in got


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


def _make_venv(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`make venv` in a copy of the Makefile and pyproject.toml (the checkout's .venv is not involved),
    with a Python that does not exist: past the Jetson check, nothing can be installed either."""
    if shutil.which("make") is None:
        pytest.skip("no make here")
    for name in ("Makefile", "pyproject.toml"):
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    # serial and without the caller's make or Jetson settings (a `make -j test` around pytest passes -j on)
    env = {k: v for k, v in os.environ.items()
           if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "JETSON_OK", "TEGRA_RELEASE"}}
    return subprocess.run(["make", "-j1", "--no-print-directory", "-C", str(tmp_path), *args,
                           f"PYTHON={tmp_path / 'no-such-python'}"], capture_output=True, text=True, timeout=60,
                          env=env)


def test_make_venv_stops_on_a_jetson(tmp_path):
    """On a Jetson (JetPack writes /etc/nv_tegra_release) `make demo`/`make test` would install PyPI's
    torch (none for JetPack 5's Python 3.8, CPU-only on JetPack 6), pip's OpenCV without GStreamer and
    TensorRT-RTX: the venv rule stops first, with one message pointing to the README's Install section."""
    tegra = tmp_path / "nv_tegra_release"
    tegra.write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n")
    res = _make_venv(tmp_path, "venv", f"TEGRA_RELEASE={tegra}")
    assert res.returncode != 0
    assert "this is a Jetson" in res.stderr and "README.md's Install section" in res.stderr, res.stderr
    assert "make venv JETSON_OK=1" in res.stderr  # the way past it, for people who know
    assert "no-such-python" not in res.stdout + res.stderr  # stopped before the first install step
    assert not (tmp_path / ".venv").exists()

    # JETSON_OK=1, or a machine without the file, goes on to make the venv (here: the missing Python)
    for args in ([f"TEGRA_RELEASE={tegra}", "JETSON_OK=1"], [f"TEGRA_RELEASE={tmp_path / 'absent'}"]):
        res = _make_venv(tmp_path, "venv", *args)
        assert res.returncode != 0 and "this is a Jetson" not in res.stderr, args
        assert "no-such-python" in res.stdout + res.stderr, args


def test_make_demo_and_test_reach_the_jetson_check(tmp_path):
    """The check is in the rule every make target that needs .venv goes through."""
    tegra = tmp_path / "nv_tegra_release"
    tegra.write_text("# R36 (release), REVISION: 4.3\n")
    for goal in ("demo", "test"):
        res = _make_venv(tmp_path, goal, f"TEGRA_RELEASE={tegra}")
        assert res.returncode != 0 and f"make {goal} JETSON_OK=1" in res.stderr, (goal, res.stderr)
