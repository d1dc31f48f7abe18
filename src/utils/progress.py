"""Progress bars (rich), quiet when asked or when not attached to a terminal and running tests."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def track(iterable: Iterable[T], total: int | None = None, description: str = "", enabled: bool = True) -> Iterator[T]:
    """Iterate with a rich progress bar (description, bar, n/total, elapsed, remaining)."""
    if not enabled:
        yield from iterable
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)
