"""Redis restarted without persistence loses every queued message: the jobs still complete."""

import shutil
import time
from collections.abc import Iterator

import pytest

from tests import workers
from tests.conftest import Api, Mailbox
from tests.processes import web_process
from tests.redis_server import RedisServer, running
from tests.test_reconcile import (
    accepted,
    assert_all_complete_once,
    scheduled_workers,
    signup,
    submit,
)
from tests.test_reliability import post_file, post_json


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with running() as server:
        yield server


@pytest.mark.drill
@pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL")
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_jobs_complete_after_redis_restarts_empty(
    api: Api, mailbox: Mailbox, private_redis: RedisServer, without_thread_worker: None
) -> None:
    with web_process(BROKER_URL=private_redis.url) as web:
        accepted_at = time.monotonic()
        jobs = submit(
            lambda address: accepted(post_json(f"{web}/signups", signup(address))),
            lambda content: accepted(post_file(f"{web}/files", "lost.csv", content)),
        )
    private_redis.restart_empty()
    with scheduled_workers(private_redis.url):
        assert_all_complete_once(api, mailbox, jobs, since=accepted_at)
