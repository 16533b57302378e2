"""The rate limit's counts in the database: a table per host that pyrate-limiter keeps itself
(`ratelimit___webhook_…`, outside the migrations), a sliding window log of the calls."""

import atexit
import hashlib
from functools import lru_cache

from psycopg_pool import ConnectionPool
from pyrate_limiter import AbstractBucket, PostgresBucket, Rate

from .database import engine_url
from .once import once
from .settings import get_settings


@lru_cache(maxsize=256)
def bucket(host: str, rate: tuple[int, int]) -> AbstractBucket:
    """The bucket of calls to `host`, at `rate` (calls, milliseconds)."""
    limit, period_ms = rate
    return PostgresBucket(_pool(), _table(host), [Rate(limit, period_ms)])


@once
def _pool() -> ConnectionPool:
    url = engine_url(get_settings().database_url).set(drivername="postgresql")
    conninfo = url.render_as_string(hide_password=False)
    # No server-side prepared statements, as for the engine (see database.py): PgBouncer.
    kwargs = {"prepare_threshold": None}
    pool = ConnectionPool(conninfo, min_size=1, max_size=4, timeout=5, kwargs=kwargs, open=True)
    atexit.register(pool.close)  # its threads would otherwise hold up the process's exit
    return pool


def _table(host: str) -> str:
    """A table name per host that stays within identifier limits."""
    return f"webhook_{hashlib.sha256(host.encode()).hexdigest()[:16]}"
