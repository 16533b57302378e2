"""A rate limit per destination host, shared by every worker process on every machine.

No window of WEBHOOK_RATE_PERIOD holds more than WEBHOOK_RATE_LIMIT calls to one host. The
limit's counts live in a shared store (`ratelimit_store.py`) that pyrate-limiter reads and updates
atomically, so workers on other machines take their turns from the same counts.
"""

import threading

from pyrate_limiter import Decision, RateItem, WallClock

from .ratelimit_store import bucket
from .settings import get_settings

CLOCK = WallClock()
_DECIDING = threading.Lock()


def wait_for_turn(host: str) -> float:
    """Take a turn to call `host` now and return 0, or return the seconds until a turn is free."""
    settings = get_settings()
    rate = (settings.webhook_rate_limit, round(settings.webhook_rate_period * 1000))
    host_bucket = bucket(host, rate)
    # A bucket keeps its last decision on itself: one thread at a time, or a refusal made for one
    # thread could be read as another's permission.
    with _DECIDING:
        now = CLOCK.now()  # epoch milliseconds: comparable between machines
        decision = host_bucket.put_decision(RateItem(host, now))
        host_bucket.leak(now)  # forget the calls that have left every window, if it keeps a log
    assert isinstance(decision, Decision)
    if decision.allowed:
        return 0.0
    if decision.retry_after_ms is None:  # another worker held the bucket: try again shortly
        return settings.webhook_rate_period / settings.webhook_rate_limit
    return decision.retry_after_ms / 1000
