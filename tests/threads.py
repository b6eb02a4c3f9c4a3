"""Run one function on several threads at once, for the thread-safety tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def run_threads(fn: Callable[[int], Any], n: int = 4) -> list[Any]:
    """``[fn(0), ..., fn(n-1)]``, each called on its own thread, all started together.

    An exception in any thread is re-raised here, so a failing thread fails the test.
    """
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            results[i] = fn(i)
        except BaseException as exc:  # collected, re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
