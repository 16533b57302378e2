"""The rate limit's counts in the database file: a table per host that pyrate-limiter keeps itself
(`ratelimit___webhook_…`, outside the migrations), a sliding window log of the calls."""

import hashlib
from functools import lru_cache

from pyrate_limiter import AbstractBucket, Rate, SQLiteBucket
from sqlalchemy import make_url

from .settings import get_settings


@lru_cache(maxsize=256)
def bucket(host: str, rate: tuple[int, int]) -> AbstractBucket:
    """The bucket of calls to `host`, at `rate` (calls, milliseconds)."""
    limit, period_ms = rate
    database = make_url(get_settings().database_url).database
    assert database, "the rate limit needs a SQLite file, not an in-memory database"
    # The file lock makes each check-and-count atomic across processes on this host.
    return SQLiteBucket.init_from_file(
        [Rate(limit, period_ms)],
        table=f"ratelimit___{_table(host)}",
        db_path=database,
        use_file_lock=True,
    )


def _table(host: str) -> str:
    """A table name per host that stays within identifier limits."""
    return f"webhook_{hashlib.sha256(host.encode()).hexdigest()[:16]}"
