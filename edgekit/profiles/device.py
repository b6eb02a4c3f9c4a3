"""What this machine is (device tree, L4T, GPU), which profile fits it, and what a profile refuses to build.

Split from the profiles catalog (edgekit/profiles/__init__.py), which re-exports every name here.
Nothing here calls ``detect``: callers reach it through the package (``prof_mod.detect()``), so
tests can replace it there.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.errors import UsageError

if TYPE_CHECKING:
    from edgekit.profiles import Batch, Profile


# ------------------------------------------------------------------ detection


@dataclass(frozen=True)
class Device:
    """What this machine is, as read from the system."""

    model: str = ""  # /proc/device-tree/model
    compatible: tuple[str, ...] = ()
    l4t: str = ""  # "36.4.3" from /etc/nv_tegra_release
    gpu_name: str = ""
    compute_capability: str = ""

    @property
    def is_jetson(self) -> bool:
        return bool(self.model or self.compatible or self.l4t)

    @property
    def is_nvidia_board(self) -> bool:
        """A Jetson, named by profile or not (L4T, or NVIDIA's device tree); a Raspberry Pi also has a
        device tree, and is not one."""
        return bool(self.l4t or any(c.startswith("nvidia,") for c in self.compatible)
                    or "jetson" in self.model.lower() or "nvidia" in self.model.lower())


def read_device(root: Path = Path("/"), gpu: tuple[str, str] | None = None) -> Device:
    """Read the device tree and L4T release under ``root`` (tests pass recorded files)."""
    def text(rel: str) -> str:
        p = root / rel
        try:
            return p.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""

    model = text("proc/device-tree/model").strip("\x00").strip()
    compatible = tuple(c for c in text("proc/device-tree/compatible").split("\x00") if c)
    release = text("etc/nv_tegra_release")
    l4t = ""
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release)
    if m:
        l4t = f"{m.group(1)}.{m.group(2)}"
    name, cc = gpu if gpu is not None else (_query_gpu() if not (model or compatible) else ("", ""))
    return Device(model, compatible, l4t, name, cc)


@functools.lru_cache(maxsize=1)
def _query_gpu() -> tuple[str, str]:
    """The first GPU's name and compute capability from nvidia-smi (asked once per process)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "", ""
    try:
        out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return "", ""
    if not out:
        return "", ""
    parts = [p.strip() for p in out[0].split(",")]
    return (parts[0], parts[1]) if len(parts) >= 2 else (parts[0], "")


def match(device: Device, profiles: list[Profile] | None = None) -> Profile:
    """The profile for ``device``: device tree first on a Jetson, then GPU name and compute capability."""
    from edgekit.profiles import all_profiles

    profiles = profiles or all_profiles()
    if device.is_jetson:
        for p in profiles:
            if p.kind == "jetson" and any(c in device.compatible for c in p.compatible):
                return p
        for p in profiles:
            if p.kind == "jetson" and any(s.lower() in device.model.lower() for s in p.device_tree):
                return p
    if device.gpu_name or device.compute_capability:
        for p in profiles:
            if p.kind != "jetson" and any(s.lower() in device.gpu_name.lower() for s in p.gpu_names) \
                    and (not device.compute_capability or device.compute_capability in p.compute_capability):
                return p
        for p in profiles:
            if p.kind != "jetson" and device.compute_capability in p.compute_capability:
                return p
    return next(p for p in profiles if p.kind == "cpu")


def detect(root: Path = Path("/")) -> tuple[Profile, Device]:
    dev = read_device(root)
    return match(dev), dev


# ------------------------------------------------------------------ refusals


def edgekit_runs_on(p: Profile) -> bool:
    """Whether any JetPack the profile lists runs edgekit's Python runtime (desktops always do)."""
    return p.kind != "jetson" or not p.software or any(s.runs_edgekit for s in p.software)


DLA_BATCH = 1  # DLA takes static shapes only (min = opt = max); NVIDIA's jetson_benchmarks run DLA at batch 1


def target_compute_capability(p: Profile, dev: Device) -> str | None:
    """The compute capability an engine is built for: this GPU's when the profile covers it (a
    GB10 is 12.1 where desktop-blackwell also lists 12.0), else the profile's first."""
    if dev.compute_capability and (not p.compute_capability or dev.compute_capability in p.compute_capability):
        return dev.compute_capability
    return p.compute_capability[0] if p.compute_capability else None


def check_request(p: Profile, precision: str, dla: int | None = None, batch: Batch | None = None,
                  workspace_mib: int | None = None) -> None:
    """Refuse, before any work, what the device cannot honour, saying what to do instead."""
    from edgekit.profiles import PRECISIONS

    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision not in p.fast_precisions:
        arch = p.architecture
        if p.compute_capability:
            arch += f" (sm_{p.compute_capability[0].replace('.', '')})"
        better = "--fp16" if "fp16" in p.fast_precisions else "--fp32"
        raise UsageError(f"{p.name}: no fast {precision.upper()} on {arch}: use {better}")
    if dla is not None:
        if p.dla_cores == 0:
            raise UsageError(f"{p.name} has no DLA (DLA cores: 0); drop --dla to build for the GPU")
        if not 0 <= dla < p.dla_cores:
            raise UsageError(f"{p.name} has DLA cores 0-{p.dla_cores - 1}; --dla {dla} does not exist")
        if precision == "fp32":
            raise UsageError(f"DLA has no FP32 ({p.name}): build --fp16 or --int8 for --dla {dla}, "
                             "or drop --dla to build FP32 for the GPU")
        if batch is not None and not batch.min == batch.opt == batch.max:
            raise UsageError(f"DLA needs one static batch size, got --batch {batch.min}:{batch.opt}:{batch.max}; "
                             f"use --batch N (DLA builds default to batch {DLA_BATCH})")
    if batch is not None and batch.max > p.max_batch:
        raise UsageError(f"{p.name}: batch {batch.max} is beyond the profile's largest ({p.max_batch}); "
                         f"use --batch {batch.min}:{min(batch.opt, p.max_batch)}:{p.max_batch} or less")
    if workspace_mib is not None and p.workspace_mib and workspace_mib > p.workspace_mib:
        raise UsageError(f"{p.name}: workspace {workspace_mib} MiB is beyond the profile's limit "
                         f"({p.workspace_mib} MiB); builds on this board get killed for memory above it")
