"""``map_ahead``: ``map`` that computes the next few items in a thread while the caller uses one.

The master builds a bulk job body (a panel read with ``pread``, hashed, signed) while the
previous one is on its way to beanstalkd: ``pread`` and hashlib release the GIL, so both run at
once. The standard library's ``Executor.map`` would submit every item at once (for a 512 MiB
matrix, all its panels in memory); this keeps at most ``depth`` results ahead of the caller.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


def map_ahead(func: Callable[[_T], _R], items: Iterable[_T], depth: int) -> Iterator[_R]:
    """Yield ``func(item)`` for each item in order, computing up to ``depth`` of them ahead in
    one background thread. An exception of ``func`` is raised where its result is due; closing
    the iterator early cancels what has not started."""
    if depth < 1:
        raise ValueError("depth must be at least 1")
    pending = iter(items)
    pool = ThreadPoolExecutor(1, thread_name_prefix="ahead")
    try:
        futures: deque[Future[_R]] = deque(
            pool.submit(func, item) for item in itertools.islice(pending, depth)
        )
        while futures:
            done = futures.popleft()
            for item in itertools.islice(pending, 1):
                futures.append(pool.submit(func, item))
            yield done.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
