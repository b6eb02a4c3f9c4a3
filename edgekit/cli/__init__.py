"""The edgekit command line (``edgekit = "edgekit.cli:main"``, ``python -m edgekit``): thin commands
that parse, call one library function, print; one module per stage, the group and its error handler
in main.py.

Only names that no submodule has are re-exported here: ``edgekit.cli.demo`` and ``edgekit.cli.export``
stay the modules (tests patch ``edgekit.cli.demo``'s globals).
"""

from __future__ import annotations

from edgekit.cli.main import cli, main
from edgekit.cli.options import _echo_err, _ProgressBar, parse_triple
from edgekit.errors import UsageError

__all__ = ["cli", "main", "UsageError", "_ProgressBar", "_echo_err", "parse_triple"]
