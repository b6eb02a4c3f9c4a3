"""Everything that needs an NVIDIA GPU, in one run (``make device-check``), for whoever gets one.

Steps, each timed and each saying why when it cannot run:

1. the machine: GPU, driver, CUDA bindings, TensorRT flavours, torch, ONNX Runtime;
2. the CUDA layer (edgekit.trt.cuda) on the real driver: round trip, memory query, four
   threads, streams and events released;
3. the gpu-marked tests (pytest -m gpu);
4. a TensorRT or TensorRT-RTX engine built for this GPU and run against ONNX Runtime (parity),
   from four threads;
5. ``edgekit bench`` rows on the GPU against PyTorch eager FP16 and a CUDA graph.

Figures go to one JSON file (``--out``, default device-check.json) and a summary to stdout.
Uses the interpreter that runs it (the device machine's own Python: it has no network, so no
virtual environment is built there; what it lacks travels as wheels: onnxslim for the export
that steps 4 and 5 make, TensorRT or TensorRT-RTX for step 4). The figures of each GPU that ran
it are kept in benchmarks/device/. Stops itself before ``--budget`` seconds (default 420).

    python3 benchmarks/device_check.py [--out device-check.json] [--budget 420]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable  # noqa: UP035 (runs on the device's Python, 3.8 included)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


class Check:
    def __init__(self, budget: float) -> None:
        self.t0 = time.perf_counter()
        self.budget = budget
        self.report: dict[str, Any] = {"steps": {}, "not_run": {}}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def step(self, name: str, fn: Callable[[], Any], need: float = 20.0) -> Any:
        if self.left() < need:
            self.report["not_run"][name] = f"out of time ({self.left():.0f} s left of {self.budget:.0f})"
            return None
        t = time.perf_counter()
        try:
            out = fn()
        except Skip as exc:
            self.report["not_run"][name] = str(exc)
            return None
        except Exception as exc:  # a failure is a finding: recorded with its traceback tail
            self.report["steps"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                          "trace": traceback.format_exc().splitlines()[-6:],
                                          "seconds": round(time.perf_counter() - t, 2)}
            return None
        self.report["steps"][name] = {"ok": True, "result": out, "seconds": round(time.perf_counter() - t, 2)}
        return out


class Skip(Exception):
    """A step that cannot run here, and why."""


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:
        return None
    try:
        from importlib.metadata import version

        return version({"yaml": "pyyaml", "cv2": "opencv-python-headless", "cuda.bindings": "cuda-bindings"}
                       .get(module, module))
    except Exception:
        return str(getattr(mod, "__version__", "present"))


def _tegra(root: Path = Path("/")) -> str:
    """A Jetson's own word that it is one: its device tree, or its GPU's /dev/nvhost-* nodes."""
    try:
        compatible = (root / "proc" / "device-tree" / "compatible").read_bytes()
    except OSError:
        compatible = b""
    if b"nvidia,tegra" in compatible:
        return "device tree: " + compatible.replace(b"\0", b" ").decode("ascii", "replace").strip()
    nodes = sorted(p.name for p in (root / "dev").glob("nvhost-*")) if (root / "dev").is_dir() else []
    return f"/dev/{nodes[0]}" if nodes else ""


def _driver_devices() -> tuple[int, str]:
    """CUDA devices the driver counts (cuDeviceGetCount), through cuda-python's driver module:
    ``cuda.bindings.driver`` (12.6.1+) or the older ``cuda.cuda``; (0, why) when none."""
    why = "no cuda-python"
    for name in ("cuda.bindings.driver", "cuda.cuda"):
        try:
            drv = importlib.import_module(name)
        except Exception:
            continue
        ok = drv.CUresult.CUDA_SUCCESS
        try:  # newer bindings raise where there is no libcuda at all
            (err,) = drv.cuInit(0)
            if err != ok:
                return 0, f"cuInit: {getattr(err, 'name', err)}"
            err, count = drv.cuDeviceGetCount()
        except Exception as exc:
            return 0, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        return (int(count), "") if err == ok and count else (0, f"cuDeviceGetCount: {getattr(err, 'name', err)}")
    return 0, why


def _gpu(root: Path = Path("/")) -> str:
    """'' when an NVIDIA GPU answers, else why not. nvidia-smi on desktops; a Jetson on JetPack 5
    has none, so also its device tree or /dev/nvhost-* nodes, and the CUDA driver itself."""
    smi = shutil.which("nvidia-smi")
    smi_why = "no nvidia-smi"
    if smi:
        res = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        if res.returncode == 0 and "GPU" in res.stdout:
            return ""
        smi_why = f"nvidia-smi fails: {res.stderr.strip()[:120]}"
    if _tegra(root):
        return ""
    count, driver_why = _driver_devices()
    if count:
        return ""
    return f"no NVIDIA GPU here ({smi_why}; no Jetson device tree or /dev/nvhost-*; CUDA driver: {driver_why})"


def machine() -> dict[str, Any]:
    smi = shutil.which("nvidia-smi")
    gpus = ""
    if smi:
        res = subprocess.run([smi, "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        gpus = res.stdout.strip()
    if not gpus and _tegra():  # a Jetson: no nvidia-smi before JetPack 6
        gpus = _tegra()
    from edgekit.cpuinfo import detect

    return {"python": platform.python_version(), "gpus": gpus, "cpu": detect().describe(),
            **{m: _version(m) for m in ("numpy", "onnx", "onnxruntime", "torch", "cupy", "tensorrt",
                                        "tensorrt_rtx", "pycuda", "cuda.bindings", "click", "yaml", "cv2")}}


def cuda_layer() -> dict[str, Any]:
    import numpy as np

    if _gpu():
        raise Skip(_gpu())
    from edgekit.trt.cuda import available, open_cuda

    if not available():
        raise Skip("no CUDA binding (pycuda or cuda-python) importable")
    cuda = open_cuda()
    out: dict[str, Any] = {"binding": cuda.binding, "device": cuda.device_name, "cc": cuda.compute_capability}
    free, total = cuda.memory()  # outside any context: memory() must push its own
    out["memory_mib"] = [free >> 20, total >> 20]
    errors: list[str] = []

    def round_trip(i: int) -> None:
        try:
            with cuda.current():
                s = cuda.stream()
                x = np.arange(1 << 16, dtype=np.float32) + i
                host = cuda.pinned(x.shape, x.dtype)
                host[:] = x
                dev = cuda.alloc(x.nbytes)
                back = cuda.pinned(x.shape, x.dtype)
                cuda.to_device(dev, host, s)
                cuda.to_host(back, dev, s)
                cuda.synchronize(s)
                assert np.array_equal(back, x)
                cuda.free(dev)
                cuda.destroy(s)
        except Exception as exc:
            errors.append(f"thread {i}: {exc}")

    threads = [threading.Thread(target=round_trip, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    out["four_threads"] = "ok"
    return out


def gpu_tests(timeout: float) -> dict[str, Any]:
    if _gpu():
        raise Skip(_gpu())
    if _version("pytest") is None:
        raise Skip("pytest is not installed here")
    res = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs",
                          str(REPO / "tests" / "gpu")], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    tail = res.stdout.strip().splitlines()[-15:]
    return {"exit": res.returncode, "tail": tail}


def engine_parity(work: Path) -> dict[str, Any]:
    import numpy as np

    from edgekit.trt.parse import load_trt

    if _gpu():
        raise Skip(_gpu())
    try:
        trt = load_trt()
    except Exception as exc:
        raise Skip(f"no TensorRT here ({' '.join(str(exc).split())}); carry a tensorrt or tensorrt-rtx "
                   "wheel") from exc
    if _version("torch") is None:
        raise Skip("torch is missing: no bundle can be exported here")
    from edgekit.export.torch_onnx import ExportRequest, export
    from edgekit.images import read_image, sample_images
    from edgekit.runtime.loader import load
    from edgekit.trt.engine import EngineRequest, build
    from tests.threads import run_threads

    b = export(ExportRequest("googlenet", work / "gn", weights="random")).bundle
    out: dict[str, Any] = {"tensorrt": f"{trt.__name__} {trt.__version__}"}
    for precision in ("fp16", "fp32"):
        res = build(EngineRequest(b, precision=precision))
        with load(b, backend="tensorrt", precision=precision) as t, load(b, backend="onnxruntime",
                                                                          precision="fp32") as ref:
            frames = [read_image(p) for p in sample_images()]
            got = np.array([p.indices[0] for p in t.classify_batch(frames)])
            want = np.array([p.indices[0] for p in ref.classify_batch(frames)])
            one = [t.classify(f).indices for f in frames]
            same = run_threads(lambda i, t=t, frames=frames: [t.classify(f).indices for f in frames])
        out[precision] = {"build_s": res.entry["build_seconds"], "top1_equal": int((got == want).sum()),
                          "images": len(frames), "four_threads_same": all(s == one for s in same),
                          "profiles": res.entry.get("profiles"), "sharing": res.entry.get("profile_sharing")}
    return out


def bench_rows(work: Path, timeout: float) -> dict[str, Any]:
    if _version("torch") is None:
        raise Skip("torch is missing")
    import torch

    if not torch.cuda.is_available():
        raise Skip("torch sees no CUDA device")
    b = work / "gn"
    if not b.exists():
        from edgekit.export.torch_onnx import ExportRequest, export

        export(ExportRequest("googlenet", b, weights="random"))
    res = subprocess.run([sys.executable, "-m", "edgekit", "bench", str(b), "--compare", "torch", "--batch", "1,8",
                          "--json"], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    if res.returncode:
        raise RuntimeError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}")
    return json.loads(res.stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="device-check.json")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds; steps that would not fit are skipped")
    args = ap.parse_args()
    c = Check(args.budget)
    c.report["machine"] = c.step("machine", machine, need=5) or {}
    with tempfile.TemporaryDirectory(prefix="edgekit-device-") as tmp:
        work = Path(tmp)
        c.step("cuda_layer", cuda_layer, need=10)
        c.step("gpu_tests", lambda: gpu_tests(max(30.0, c.left() - 200)), need=60)
        c.step("engine_parity", lambda: engine_parity(work), need=90)
        c.step("bench", lambda: bench_rows(work, max(30.0, c.left() - 5)), need=60)
    c.report["seconds"] = round(time.perf_counter() - c.t0, 1)
    Path(args.out).write_text(json.dumps(c.report, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"device check: {c.report['seconds']} s, figures in {args.out}")
    for name, s in c.report["steps"].items():
        print(f"  {name:<14} {'ok' if s['ok'] else 'FAILED'} ({s['seconds']} s)"
              + ("" if s["ok"] else f": {s['error']}"))
    for name, why in c.report["not_run"].items():
        print(f"  {name:<14} not run: {why}")
    return 0 if all(s["ok"] for s in c.report["steps"].values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("EDGEKIT_OFFLINE", "1")
    sys.exit(main())
