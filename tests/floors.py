"""The oldest versions pyproject.toml promises for the device tier, pinned: ``make test-floors``
installs exactly these in a second environment and runs the torch-free tests there, so a floor
that the code has outgrown fails CI instead of a user's install.

    python tests/floors.py    # prints one requirement per line
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# the device tier: base dependencies, ONNX Runtime on a CPU, video from pip's OpenCV
EXTRAS = ("cpu", "video")


def floors(pyproject: Path) -> list[str]:
    import tomllib

    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += [r for r in project["optional-dependencies"][extra] if not r.startswith("edgekit")]
    out = []
    for r in reqs:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][0-9.]*)\s*", r)
        if m is None:
            raise SystemExit(f"{r!r}: a device-tier dependency needs a '>=' floor")
        out.append(f"{m.group(1)}=={m.group(2)}.*")  # the floor's release series (4.8: 4.8.1.78)
    return sorted(set(out))


if __name__ == "__main__":
    print("\n".join(floors(Path(__file__).resolve().parent.parent / "pyproject.toml")))
    sys.exit(0)
