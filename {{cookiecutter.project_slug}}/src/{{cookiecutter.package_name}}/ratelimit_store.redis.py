"""The rate limit's counts in the broker's Redis: pyrate-limiter's GCRA, one small key per host,
updated atomically by a Lua script and expiring on its own. Calls to a host are spaced evenly."""

from functools import lru_cache
{%- if cookiecutter.task_queue == "celery" %}
from urllib.parse import urlsplit
{%- endif %}

from pyrate_limiter import (
    AbstractBucket,
{%- if cookiecutter.task_queue == "celery" %}
    InMemoryStateStore,
{%- endif %}
    Rate,
    RedisStateStore,
    StateBucket,
    StateStore,
)
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry

from .once import once
from .settings import get_settings


@lru_cache(maxsize=256)
def bucket(host: str, rate: tuple[int, int]) -> AbstractBucket:
    """The bucket of calls to `host`, at `rate` (calls, milliseconds)."""
    limit, period_ms = rate
    key = f"{{ cookiecutter.package_name }}:webhook-rate:{host}"
    # burst=1: calls are spaced period/limit apart rather than sent in clumps.
    return StateBucket([Rate(limit, period_ms, burst=1)], store=_store(key))


def _store(key: str) -> StateStore:
{%- if cookiecutter.task_queue == "celery" %}
    if urlsplit(get_settings().broker_url).scheme == "memory":
        return InMemoryStateStore()  # Celery's in-process transport (tests): one process only
{%- endif %}
    return RedisStateStore(_redis(), key)


@once
def _redis() -> Redis:
    return Redis.from_url(
        get_settings().broker_url,
        socket_connect_timeout=3,
        socket_timeout=5,
        retry=Retry(ExponentialBackoff(cap=1, base=0.1), retries=2),
        retry_on_error=[ConnectionError, TimeoutError],
    )
