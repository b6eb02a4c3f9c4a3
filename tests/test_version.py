"""One version: the package's and pyproject.toml's agree (a wheel and `edgekit --version` say the same)."""

from __future__ import annotations

import re
from pathlib import Path

from edgekit import __version__
from edgekit.version import __version__ as version


def test_the_package_and_pyproject_give_one_version():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'^version = "([^"]+)"$', text, re.M)
    assert m and m.group(1) == __version__ == version
