"""Redis restarted without persistence loses every queued message: the jobs still complete."""

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests import workers
from tests.conftest import Api, Mailbox
from tests.processes import free_port, web_process
from tests.test_reconcile import (
    accepted,
    assert_all_complete_once,
    scheduled_workers,
    signup,
    submit,
)
from tests.test_reliability import post_file, post_json


class RedisServer:
    """A Redis server of the test's own, without persistence, as many small plans run it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def restart_empty(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


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
