"""One bounded thread pool for the stages that fan work out (chips, captions).

Submitting everything at once would hold every result (a chip, a caption request) in memory
before the first is consumed; :func:`bounded_map` keeps at most ``2 * workers`` items in flight,
so memory stays flat however many cells there are, and the consumer sees results as they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


def bounded_map(fn: Callable[[_T], _R], items: Iterable[_T], workers: int, *,
                name: str = "urbangeo") -> Iterator[tuple[_T, _R]]:
    """``(item, fn(item))`` in completion order, at most ``2 * workers`` items in flight.

    ``items`` is consumed lazily on the calling thread (so it may read from something that is
    not thread-safe). An exception from ``fn`` propagates from the iteration and cancels what
    has not started. ``workers == 1`` runs in the calling thread, in order, with no pool.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1:
        for item in items:
            yield item, fn(item)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    pending: dict[Future[_R], _T] = {}
    iterator = iter(items)
    exhausted = False

    def fill() -> None:
        nonlocal exhausted
        while not exhausted and len(pending) < 2 * workers:
            try:
                item = next(iterator)
            except StopIteration:
                exhausted = True
                return
            pending[pool.submit(fn, item)] = item

    try:
        fill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                yield item, future.result()
                fill()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
