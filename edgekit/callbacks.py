"""The callbacks the library takes instead of printing (base tier).

``typing.Callable``, not ``collections.abc.Callable``: these aliases are evaluated when the
module loads, and only the typing form can be subscripted there on Python 3.8 (JetPack 5).
"""

from __future__ import annotations

from typing import Callable

Log = Callable[[str], None]  # one line of progress or advice, for the CLI to show
Progress = Callable[[int, int], None]  # (done, total)
