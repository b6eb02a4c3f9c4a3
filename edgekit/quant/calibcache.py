"""TensorRT's calibration cache (text), for implicit INT8 on TensorRT < 11.

Format, as TensorRT writes it::

    TRT-8601-EntropyCalibration2
    input: 3c009976
    conv1_output: 3caa54fc

One line per tensor: its name, then the big-endian IEEE-754 bits of the float32 scale
(amax / 127) in hex; a zero scale is written ``0``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from edgekit.errors import UsageError

ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")


@dataclass(frozen=True)
class CalibrationCache:
    version: int  # TensorRT's version number as in the header, e.g. 8601 or 101401
    algorithm: str
    scales: dict[str, float]  # tensor name -> scale (amax / 127)

    def amax(self, name: str) -> float:
        return self.scales[name] * 127.0


def scale_to_hex(scale: float) -> str:
    if scale == 0.0:
        return "0"
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    text = text.strip()
    if text == "0":
        return 0.0
    if len(text) > 8:
        raise ValueError(f"{text!r} is longer than a float32")
    value: float = struct.unpack(">f", bytes.fromhex(text.rjust(8, "0")))[0]
    return value


def trt_version_number(version: str) -> int:
    """'8.6.1.6' -> 8601, '10.14.1' -> 101401 (TensorRT's own cache header numbering)."""
    parts = [int(p) for p in version.split(".")[:3]] + [0, 0, 0]
    major, minor, patch = parts[:3]
    if major >= 10:
        return major * 10000 + minor * 100 + patch
    return major * 1000 + minor * 100 + patch


def dumps(cache: CalibrationCache) -> str:
    if cache.algorithm not in ALGORITHMS:
        raise UsageError(f"unknown calibration algorithm {cache.algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    lines = [f"TRT-{cache.version}-{cache.algorithm}"]
    for name, scale in cache.scales.items():
        if ":" in name or "\n" in name:
            raise UsageError(f"tensor name {name!r} cannot be written to a calibration cache")
        lines.append(f"{name}: {scale_to_hex(scale)}")
    return "\n".join(lines) + "\n"


def loads(text: str, source: str = "calibration cache") -> CalibrationCache:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise UsageError(f"{source} is empty")
    header = lines[0].strip()
    parts = header.split("-", 2)
    if len(parts) != 3 or parts[0] != "TRT" or not parts[1].isdigit():
        raise UsageError(f"{source}: first line {header!r} is not a TensorRT cache header (TRT-<version>-<algorithm>)")
    scales: dict[str, float] = {}
    for n, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(":")
        if not sep or not name:
            raise UsageError(f"{source}: line {n} {line!r} is not 'tensor: hex'")
        try:
            scales[name.strip()] = hex_to_scale(value)
        except ValueError as exc:
            raise UsageError(f"{source}: line {n}: {exc}") from exc
    return CalibrationCache(int(parts[1]), parts[2], scales)


def from_amax(amax: dict[str, float], version: int, algorithm: str) -> CalibrationCache:
    """Scales amax/127 from symmetric thresholds (what the TensorRT Q/DQ model uses too).

    An all-zero tensor gets 1/127, not 0: TensorRT 8.6 fails INT8 builds on a zero scale
    (NVIDIA/TensorRT #3020), and the Q/DQ model uses the same 1/127 for it.
    """
    return CalibrationCache(version, algorithm,
                            {name: (float(a) if a > 0 else 1.0) / 127.0 for name, a in amax.items()})
