"""Type stubs generated from TensorRT's Python bindings, for checking the gpu-tier code statically.

pybind11-stubgen writes a few signatures that are not valid Python (a parameter named ``in``,
a default before a non-default); those lines are repaired so mypy can read the rest.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path


def _valid(line: str) -> bool:
    try:
        ast.parse(line.strip() + "\n    ...")
    except SyntaxError:
        return False
    return True


def repair(text: str) -> str:
    out = []
    for line in text.splitlines():
        if line.lstrip().startswith("def ") and not _valid(line):
            line = re.sub(r"([(,]\s*)(in|lambda|from|class|def)\s*:", r"\1\2_:", line)
            if not _valid(line):
                line = re.sub(r"\s*=\s*[^,()]+(?=[,)])", "", line)
        out.append(line)
    return "\n".join(out) + "\n"


def generate(modules: list[str], out: Path) -> Path:
    """Stubs for ``modules`` under ``out``; returns ``out``."""
    subprocess.run([sys.executable, "-m", "pybind11_stubgen", *modules, "-o", str(out), "--ignore-all-errors"],
                   check=True, capture_output=True, text=True, timeout=300)
    for pyi in out.rglob("*.pyi"):
        pyi.write_text(repair(pyi.read_text(encoding="utf-8")), encoding="utf-8")
    return out
