"""Progress from inside a shard: the items a shard function has finished, shown on the run's one bar as they
finish rather than when the whole shard comes back.

>>> report_progress(3)          # in a shard function: three more items are done (no-op outside a sharded run)

In process, the report goes straight to the bar; on a Ray worker it goes to a small counter actor that the
driver reads while it waits. A shard function that never reports still moves the bar when it finishes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["report_progress", "reporting"]

_reporter: list[Callable[[int], None]] = []


def report_progress(n: int = 1) -> None:
    """``n`` more items of the running shard are finished (nothing happens outside a sharded run)."""
    if _reporter and n > 0:
        _reporter[-1](n)


@contextmanager
def reporting(fn: Callable[[int], None]) -> Iterator[None]:
    """Send :func:`report_progress` calls to ``fn`` while the block runs."""
    _reporter.append(fn)
    try:
        yield
    finally:
        _reporter.pop()
