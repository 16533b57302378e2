"""Objects made once per process for each set of arguments: an engine, a connection pool, a
client, a semaphore.

`functools.cache` alone runs the factory in every thread that misses at the same moment, and a
worker's first jobs all start at once: each would make its own engine, the spares would keep the
connections they opened, idle and out of everyone's reach, and a database with few connections
to spare would run out of them for good.
"""

import functools
import os
import threading
from collections.abc import Callable, Hashable
{%- if cookiecutter.python_version == "3.11" %}
from typing import Generic, TypeVar

T = TypeVar("T")


class once(Generic[T]):  # a decorator, named like functools.cache
{%- else %}


class once[T]:  # a decorator, named like functools.cache
{%- endif %}
    """Like `functools.cache`, but one thread makes a value while the others wait for it."""

    def __init__(self, factory: Callable[..., T]) -> None:
        self._cached = functools.cache(factory)
        self._lock = threading.Lock()
        # A child forked while another thread held the lock would wait for it for ever.
        os.register_at_fork(after_in_child=self._unlock)
        functools.update_wrapper(self, factory)

    def __call__(self, *args: Hashable) -> T:
        with self._lock:
            return self._cached(*args)

    def cache_clear(self) -> None:
        with self._lock:
            self._cached.cache_clear()

    def _unlock(self) -> None:
        self._lock = threading.Lock()
