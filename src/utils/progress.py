"""Progress bars (rich), quiet when asked or when not attached to a terminal and running tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def _columns():
    return (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())


@contextmanager
def progress_bar(total: int, description: str = "", enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich progress bar as ``advance(n)``, callable from any thread."""
    if not enabled:
        yield lambda n=1: None
        return
    lock = threading.Lock()
    with Progress(*_columns(), transient=False) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            with lock:
                bar.advance(task, n)

        yield advance


def track(iterable: Iterable[T], total: int | None = None, description: str = "", enabled: bool = True) -> Iterator[T]:
    """Iterate with a rich progress bar (description, bar, n/total, elapsed, remaining)."""
    if not enabled:
        yield from iterable
        return
    with Progress(*_columns(), transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)
