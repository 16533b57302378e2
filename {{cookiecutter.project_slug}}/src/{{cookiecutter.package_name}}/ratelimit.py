"""A rate limit per destination host, shared by every worker process on every machine.

{% if cookiecutter.broker == "redis" -%}
It lives in the broker's Redis: pyrate-limiter's GCRA, one small key per host, updated atomically
by a Lua script and expiring on its own. Calls to a host are spaced evenly, so no window of
WEBHOOK_RATE_PERIOD holds more than WEBHOOK_RATE_LIMIT of them.
{% else -%}
It lives in the database, in a table pyrate-limiter keeps per host (named `ratelimit___…`, outside
the migrations): a sliding window log, so no window of WEBHOOK_RATE_PERIOD holds more than
WEBHOOK_RATE_LIMIT calls to one host.
{% endif -%}
"""
{% if cookiecutter.broker != "redis" %}
{%- if cookiecutter.database == "postgresql" %}
import atexit
{%- endif %}
import hashlib
{%- endif %}
import threading
from functools import lru_cache
{%- if cookiecutter.broker == "redis" and cookiecutter.task_queue == "celery" %}
from urllib.parse import urlsplit
{%- endif %}

{%- if cookiecutter.broker == "redis" %}

from pyrate_limiter import (
    AbstractBucket,
    Decision,
{%- if cookiecutter.task_queue == "celery" %}
    InMemoryStateStore,
{%- endif %}
    Rate,
    RateItem,
    RedisStateStore,
    StateBucket,
{%- if cookiecutter.task_queue == "celery" %}
    StateStore,
{%- endif %}
    WallClock,
)
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry

from .settings import get_settings
{%- elif cookiecutter.database == "postgresql" %}

from psycopg_pool import ConnectionPool
from pyrate_limiter import (
    AbstractBucket,
    Decision,
    PostgresBucket,
    Rate,
    RateItem,
    WallClock,
)

from .database import engine_url
from .settings import get_settings
{%- else %}

from pyrate_limiter import (
    AbstractBucket,
    Decision,
    Rate,
    RateItem,
    SQLiteBucket,
    WallClock,
)
from sqlalchemy import make_url

from .settings import get_settings
{%- endif %}

CLOCK = WallClock()
_DECIDING = threading.Lock()


def wait_for_turn(host: str) -> float:
    """Take a turn to call `host` now and return 0, or return the seconds until a turn is free."""
    settings = get_settings()
    rate = (settings.webhook_rate_limit, round(settings.webhook_rate_period * 1000))
    bucket = _bucket(host, rate)
    # A bucket keeps its last decision on itself: one thread at a time, or a refusal made for one
    # thread could be read as another's permission.
    with _DECIDING:
        now = CLOCK.now()  # epoch milliseconds: comparable between machines
        decision = bucket.put_decision(RateItem(host, now))
{%- if cookiecutter.broker != "redis" %}
        bucket.leak(now)  # forget the calls that have left every window
{%- endif %}
    assert isinstance(decision, Decision)
    if decision.allowed:
        return 0.0
    if decision.retry_after_ms is None:  # another worker held the bucket: try again shortly
        return settings.webhook_rate_period / settings.webhook_rate_limit
    return decision.retry_after_ms / 1000
{%- if cookiecutter.broker == "redis" %}


@lru_cache
def _redis() -> Redis:
    return Redis.from_url(
        get_settings().broker_url,
        socket_connect_timeout=3,
        socket_timeout=5,
        retry=Retry(ExponentialBackoff(cap=1, base=0.1), retries=2),
        retry_on_error=[ConnectionError, TimeoutError],
    )


@lru_cache(maxsize=256)
def _bucket(host: str, rate: tuple[int, int]) -> AbstractBucket:
    limit, period_ms = rate
    key = f"{{ cookiecutter.package_name }}:webhook-rate:{host}"
    # burst=1: calls are spaced period/limit apart rather than sent in clumps.
    return StateBucket([Rate(limit, period_ms, burst=1)], store=_store(key))
{%- if cookiecutter.task_queue == "celery" %}


def _store(key: str) -> StateStore:
    if urlsplit(get_settings().broker_url).scheme == "memory":
        return InMemoryStateStore()  # Celery's in-process transport (tests): one process only
    return RedisStateStore(_redis(), key)
{%- else %}


def _store(key: str) -> RedisStateStore:
    return RedisStateStore(_redis(), key)
{%- endif %}
{%- elif cookiecutter.database == "postgresql" %}


@lru_cache
def _pool() -> ConnectionPool:
    url = engine_url(get_settings().database_url).set(drivername="postgresql")
    conninfo = url.render_as_string(hide_password=False)
    pool = ConnectionPool(conninfo, min_size=1, max_size=4, timeout=5, open=True)
    atexit.register(pool.close)  # its threads would otherwise hold up the process's exit
    return pool


@lru_cache(maxsize=256)
def _bucket(host: str, rate: tuple[int, int]) -> AbstractBucket:
    limit, period_ms = rate
    return PostgresBucket(_pool(), _table(host), [Rate(limit, period_ms)])
{%- else %}


@lru_cache(maxsize=256)
def _bucket(host: str, rate: tuple[int, int]) -> AbstractBucket:
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
{%- endif %}
{%- if cookiecutter.broker != "redis" %}


def _table(host: str) -> str:
    """A table name per host that stays within identifier limits."""
    return f"webhook_{hashlib.sha256(host.encode()).hexdigest()[:16]}"
{%- endif %}
