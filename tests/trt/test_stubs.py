"""The gpu-tier code, which cannot run here, checked statically against the real bindings.

TensorRT: mypy against stubs generated from TensorRT-RTX's bindings (full TensorRT's
bindings cannot be imported without libnvinfer; the runtime and builder API edgekit uses is
shared). cuda-python: every driver function the CUDA module calls exists in cuda.bindings.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trt.stubs import generate

ROOT = Path(__file__).resolve().parents[2]
GPU_TIER = ["edgekit/trt/runner.py", "edgekit/trt/build.py", "edgekit/trt/parse.py"]

pytest.importorskip("tensorrt_rtx")
pytest.importorskip("pybind11_stubgen")


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(["tensorrt_rtx", "tensorrt_rtx_bindings"], tmp_path_factory.mktemp("stubs"))


def mypy(stubs: Path, files: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp / "mypy.ini"
    cfg.write_text("[mypy]\ndisallow_untyped_defs = True\nignore_missing_imports = True\n"
                   "[mypy-tensorrt_rtx_bindings.*]\nignore_errors = True\n"
                   "[mypy-tensorrt_rtx.*]\nignore_errors = True\n")
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg), "--cache-dir",
                           str(tmp / "cache"), *files], cwd=ROOT, capture_output=True, text=True,
                          env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"}, timeout=600)


def test_gpu_tier_type_checks_against_the_bindings(stubs: Path, tmp_path: Path) -> None:
    res = mypy(stubs, GPU_TIER, tmp_path)
    assert res.returncode == 0, res.stdout[-3000:]


def test_the_check_catches_a_wrong_call(stubs: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from tensorrt_rtx import IExecutionContext\n\n"
                   "def run(ctx: IExecutionContext) -> None:\n"
                   "    ctx.execute_async_v3('not a stream')\n"
                   "    ctx.set_tensor_adress('x', 0)\n")
    res = mypy(stubs, [str(bad)], tmp_path)
    assert res.returncode != 0
    assert "set_tensor_adress" in res.stdout and "execute_async_v3" in res.stdout


def _driver_calls(path: Path) -> set[str]:
    """Names looked up on the cuda-python driver module (``self.drv.X`` / ``d.X``) in _CudaPython."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "_CudaPython")
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and (
                (isinstance(node.value, ast.Attribute) and node.value.attr == "drv")
                or (isinstance(node.value, ast.Name) and node.value.id == "d")):
            names.add(node.attr)
    return names


def test_cuda_python_calls_exist_in_the_bindings() -> None:
    driver = pytest.importorskip("cuda.bindings.driver")
    names = _driver_calls(ROOT / "edgekit/trt/cuda.py")
    assert {"cuCtxPushCurrent", "cuCtxPopCurrent", "cuMemcpyHtoDAsync", "cuMemHostAlloc"} <= names
    missing = sorted(n for n in names if not hasattr(driver, n))
    assert not missing, f"not in cuda.bindings.driver {getattr(driver, '__version__', '')}: {missing}"
    assert hasattr(driver.CUdevice_attribute, "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR")
    assert hasattr(driver.CUstream_flags, "CU_STREAM_NON_BLOCKING")
