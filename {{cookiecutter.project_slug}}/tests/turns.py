"""Turns taken at the webhook rate limit, timed as the limiter itself saw them.

Run as a script, it takes turns in a process of its own, which shares nothing with the tests but
the limit's store. So that several processes ask at the same time, however long each takes to
start, it prints "ready" once it has reached the store, reads the epoch time to start at from
its input, takes turns from then for SECONDS, and prints when it took each:

    python -m tests.turns HOST SECONDS
"""

import sys
import threading
import time

from pyrate_limiter import WallClock

from {{ cookiecutter.package_name }} import ratelimit


class RecordingClock(WallClock):
    """The limiter's clock, noting for each thread the last time it gave."""

    def __init__(self) -> None:
        self.last = threading.local()

    def now(self) -> int:
        self.last.value = int(super().now())
        return int(self.last.value)


def take_turns(host: str, seconds: float) -> list[int]:
    """Ask for turns to call `host` for `seconds`; when each turn given was taken (epoch ms)."""
    clock = ratelimit.CLOCK
    assert isinstance(clock, RecordingClock), "record the limiter's clock first"
    taken: list[int] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if ratelimit.wait_for_turn(host) == 0:
            taken.append(clock.last.value)
        else:
            time.sleep(0.005)
    return taken


def assert_within(limit: int, period: float, taken: list[int]) -> None:
    """No window of `period` seconds holds more than `limit` of the turns `taken`."""
    taken = sorted(taken)
    assert len(taken) > limit, taken
    closest = min(last - first for first, last in zip(taken, taken[limit:], strict=False))
    assert closest >= period * 1000, f"{limit + 1} turns within {closest} ms"


if __name__ == "__main__":
    ratelimit.CLOCK = RecordingClock()
    host, seconds = sys.argv[1], float(sys.argv[2])
    ratelimit.wait_for_turn(f"ready.{host}")  # connected to the store, and every import done
    print("ready", flush=True)
    late = time.time() - float(sys.stdin.readline())
    assert late < seconds / 2, f"started {late:.1f}s late: the processes barely asked together"
    time.sleep(max(0.0, -late))
    print(*take_turns(host, seconds))
