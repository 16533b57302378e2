"""The network to the broker goes away while the broker keeps running, then comes back.

The Procfile's processes reach the broker through a proxy of the test's own, which drops every
connection and refuses new ones for a while. None may exit (honcho, like other process
managers, stops them all then), /health must say so and recover, and every job must complete
exactly once.
"""

{% if cookiecutter.task_queue == "arq" -%}
import asyncio
{% endif -%}
import time
import uuid
from pathlib import Path

import pytest
{%- if cookiecutter.task_queue == "arq" %}
from redis.asyncio import Redis
from redis.exceptions import WatchError

from {{ cookiecutter.package_name }} import connection
{%- endif %}

from tests import workers
from tests.conftest import Mailbox
from tests.processes import ProcessGroup, wait_until, web_health
from tests.proxy import in_front_of
from tests.test_reliability import call, post_json

pytestmark = [
    pytest.mark.drill,
    pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL"),
]
CUT_SECONDS = 12


def sign_up(base: str) -> tuple[str, str]:
    address = f"cut-{uuid.uuid4().hex[:8]}@example.com"
    status, body = post_json(f"{base}/signups", {"email": address, "name": "Ada"})
    assert status == 202, body
    return address, f"{base}/jobs/{body['job_id']}"


def assert_done_once(mailbox: Mailbox, signups: list[tuple[str, str]], timeout: float) -> None:
    def done() -> bool:
        return all(call(job)[1]["status"] in {"succeeded", "failed"} for _, job in signups)

    wait_until(done, "the jobs did not finish", timeout)
    for address, job in signups:
        assert call(job)[1]["status"] == "succeeded", call(job)
        assert len(mailbox.to(address)) == 1, address


def test_every_process_rides_out_losing_the_network_to_the_broker(
    migrated_database: None, mailbox: Mailbox, without_thread_worker: None, tmp_path: Path
) -> None:
    assert workers.TEST_BROKER_URL
    with (
        in_front_of(workers.TEST_BROKER_URL) as broker_proxy,
        ProcessGroup(
            ("web", *workers.WORKER_PROCESSES), {"BROKER_URL": broker_proxy.url}, tmp_path
        ) as group,
    ):
        wait_until(lambda: group.running() and web_health(group.base) == 200, "not healthy", 60)
        # Jobs on their way when the network goes: queued, or in a worker's hands.
        before = [sign_up(group.base) for _ in range(5)]

        broker_proxy.cut()
        cut = time.monotonic()
        wait_until(lambda: web_health(group.base) == 503, "/health missed the cut", 10)
        noticed = time.monotonic() - cut
        while time.monotonic() - cut < CUT_SECONDS:
            assert group.running()
            time.sleep(0.5)

        broker_proxy.restore()
        back = time.monotonic()
        wait_until(lambda: group.running() and web_health(group.base) == 200, "no recovery", 60)
        healthy = time.monotonic() - back
        assert_done_once(mailbox, before, 90)
        before_done = time.monotonic() - back
        after = [sign_up(group.base)]
        assert_done_once(mailbox, after, 60)
        assert group.running()
    print(
        f"/health said 503 {noticed:.1f}s into the cut and 200 {healthy:.1f}s after it;"
        f" the jobs from before were done {before_done:.1f}s after it,"
        f" a new one {time.monotonic() - back:.1f}s after it"
    )
{%- if cookiecutter.task_queue == "arq" %}


def test_a_transaction_cut_off_from_redis_counts_as_a_lost_connection() -> None:
    """What the worker meets when the network goes in the middle of taking a job (a drill that
    cannot choose that moment): redis-py raises WatchError, which the worker must ride out."""
    url = workers.TEST_BROKER_URL
    assert url

    async def watch_then_cut() -> BaseException:
        with in_front_of(url) as broker_proxy:
            redis = Redis.from_url(broker_proxy.url)
            try:
                async with redis.pipeline(transaction=True) as pipe:
                    await pipe.watch("in-progress")
                    broker_proxy.cut()
                    with pytest.raises(WatchError) as caught:
                        await pipe.exists("in-progress")
            finally:
                await redis.aclose()
        return caught.value

    assert connection.lost_connection(asyncio.run(watch_then_cut()))
    assert not connection.lost_connection(WatchError("Watched variable changed."))
{%- endif %}
