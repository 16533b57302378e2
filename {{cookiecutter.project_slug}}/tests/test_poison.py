"""A message no worker can run (not one of ours, or garbled) is set aside, and work goes on."""

import time
import uuid
from pathlib import Path

import pytest

from tests import workers
from tests.conftest import Api, Mailbox
from tests.processes import ProcessGroup, wait_until

pytestmark = [
    pytest.mark.drill,
    pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL"),
]


def test_a_poison_message_is_set_aside_and_the_worker_goes_on(
    api: Api, mailbox: Mailbox, without_thread_worker: None, tmp_path: Path
) -> None:
    workers.push_poison()
    with ProcessGroup(["worker"], {}, tmp_path) as group:
        address = f"poison-{uuid.uuid4().hex[:8]}@example.com"
        _, body = api.post_json("/signups", {"email": address, "name": "Rosalind"})
        job = api.wait_for_job(body["job_id"], timeout=60)

        def logged() -> bool:
            log = group.log("worker")
            return group.running() and all(text in log for text in workers.POISON_LOGGED)

        wait_until(logged, "the worker's log does not show the poison messages")
        time.sleep(1)  # a worker that the poison stopped would be gone by now
        assert group.running()
    assert job["status"] == "succeeded", job
    assert len(mailbox.to(address)) == 1
