"""What this CPU's integer kernels do (base tier: the standard library and numpy).

ONNX Runtime's u8 x s8 kernels (QLinearConv, QGemm, MatMulInteger) differ by CPU:

- x86 with VNNI (AVX512-VNNI, AVX-VNNI, AMX): ``vpdpbusd`` adds u8 x s8 products into int32;
  nothing saturates;
- x86 with AVX2 or AVX-512 but no VNNI: ``vpmaddubsw`` adds pairs of u8 x s8 products into
  int16 and saturates when both are large (|sum| > 32767), so 8-bit weights lose accuracy;
  ONNX Runtime's documentation recommends 7-bit weights (``reduce_range``) or U8U8 there;
- ARM64 (a Jetson's CPU): ``sdot``/``udot`` where present, else widening multiplies into
  32 bits: no saturation.

edgekit's CPU form therefore has 7-bit weights (no pair can exceed 2 * 255 * 64 = 32640),
which is safe on all of them; a bundle made before that is flagged where it would saturate.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class CpuKind:
    arch: str  # "x86_64", "aarch64", ...
    model: str
    flags: frozenset[str]

    @property
    def vnni(self) -> bool:
        return any(f in self.flags for f in VNNI_FLAGS)

    @property
    def saturates_u8s8(self) -> bool:
        """True where 8-bit u8 x s8 products are added in int16 pairs (x86 without VNNI)."""
        return self.arch in ("x86_64", "amd64", "i686", "x86") and not self.vnni

    @property
    def kind(self) -> str:
        if self.arch in ("aarch64", "arm64"):
            return "arm64" + (" (dot product)" if "asimddp" in self.flags else "")
        if self.vnni:
            return "x86 VNNI"
        if "avx512bw" in self.flags:
            return "x86 AVX-512 without VNNI"
        if "avx2" in self.flags:
            return "x86 AVX2 without VNNI"
        return f"{self.arch} (no AVX2)" if self.arch.startswith(("x86", "amd", "i")) else self.arch

    def describe(self) -> str:
        shown = sorted(f for f in self.flags if f.startswith(("avx", "amx", "asimd", "sve")) or f in ("fma",))
        return f"{self.kind}: {self.model or 'unknown model'} [{' '.join(shown) or 'no SIMD flags read'}]"


# numpy's own CPUID probe (what this process can execute, also under an emulator), by /proc name
_NUMPY_FLAGS = {"AVX2": "avx2", "FMA3": "fma", "AVX512F": "avx512f", "AVX512BW": "avx512bw",
                "AVX512VNNI": "avx512_vnni", "ASIMD": "asimd", "ASIMDDP": "asimddp", "SVE": "sve"}


def _numpy_flags() -> frozenset[str] | None:
    import importlib

    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # numpy 2, numpy 1
        try:
            features = importlib.import_module(module).__cpu_features__
        except (ImportError, AttributeError):
            continue
        return frozenset(name for key, name in _NUMPY_FLAGS.items() if features.get(key))
    return None


def _read_cpuinfo(path: Path) -> tuple[str, frozenset[str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", frozenset()
    model = ""
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return model, flags


def detect(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuKind:
    """This machine's CPU. The instruction sets come from CPUID as numpy probes it (what this
    process can run), the model name from /proc/cpuinfo; where neither answers, an x86 CPU is
    taken to saturate (the safe assumption)."""
    arch = platform.machine().lower() or "unknown"
    model, listed = _read_cpuinfo(cpuinfo)
    probed = _numpy_flags()
    flags = listed if probed is None else probed | (listed & {"avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16"})
    return CpuKind(arch, model, flags)
