"""Redis goes away for a while and comes back: every process rides it out and recovers by itself.

The Procfile's processes run against a Redis server of the test's own, which it stops and starts
again on the same port. None may exit: honcho, like other process managers, stops them all then.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import workers
from tests.conftest import Mailbox
from tests.processes import free_port, procfile_command, wait_until, web_health
from tests.redis_server import RedisServer, running
from tests.test_reliability import call, post_json

pytestmark = [
    pytest.mark.drill,
    pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL"),
]
{%- if cookiecutter.task_queue == "celery" %}
PROCESSES = ("web", "worker", "scheduler")
{%- else %}
PROCESSES = ("web", "worker", "file_worker")
{%- endif %}
OUTAGE_SECONDS = 10


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running() as server:
        yield server


@pytest.fixture
def app_processes(
    redis_server: RedisServer, migrated_database: None, tmp_path: Path
) -> Iterator[tuple[str, dict[str, subprocess.Popen[bytes]]]]:
    """The Procfile's long-running processes on that Redis server; the web app's address."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = os.environ | {
        "BROKER_URL": redis_server.url,
        "PORT": str(port),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    processes = {
        name: subprocess.Popen(
            ["/bin/sh", "-c", f"exec {procfile_command(name)}"],
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
        for name in PROCESSES
    }
    try:
        yield f"http://127.0.0.1:{port}", processes
    finally:
        for process in processes.values():  # all at once, as honcho does
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            process.wait(timeout=30)


def send_welcome_email(base: str, mailbox: Mailbox) -> None:
    address = f"outage-{uuid.uuid4().hex[:8]}@example.com"
    status, body = post_json(f"{base}/signups", {"email": address, "name": "Ada"})
    assert status == 202, body

    job_url = f"{base}/jobs/{body['job_id']}"
    wait_until(lambda: call(job_url)[1]["status"] == "succeeded", "the job was not done", 60)
    assert len(mailbox.to(address)) == 1


def test_every_process_rides_out_a_broker_outage(
    redis_server: RedisServer,
    app_processes: tuple[str, dict[str, subprocess.Popen[bytes]]],
    mailbox: Mailbox,
) -> None:
    base, processes = app_processes

    def assert_running() -> None:
        exited = [name for name, process in processes.items() if process.poll() is not None]
        assert not exited, f"exited: {exited}"

    def healthy() -> bool:
        assert_running()
        return web_health(base) == 200

    wait_until(healthy, "the app never became healthy")
    send_welcome_email(base, mailbox)

    redis_server.stop()
    went = time.monotonic()
    wait_until(lambda: web_health(base) == 503, "/health did not notice the outage", 10)
    while time.monotonic() - went < OUTAGE_SECONDS:
        assert_running()
        time.sleep(0.5)

    redis_server.start()
    came_back = time.monotonic()
    wait_until(healthy, "/health did not recover", 60)
    send_welcome_email(base, mailbox)
    assert_running()
    print(f"a new job was done {time.monotonic() - came_back:.1f}s after Redis came back")
