"""A deploy stops each worker with SIGTERM, often in the middle of a job: nothing may be lost."""

import os
import signal
import time
import uuid

import pytest

from tests import workers
from tests.conftest import Api, Mailbox
from tests.processes import kill, stop

pytestmark = [
    pytest.mark.drill,
    pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL"),
]


def test_a_worker_stopped_mid_job_finishes_it_and_the_email_is_sent_once(
    api: Api, mailbox: Mailbox, without_thread_worker: None
) -> None:
    mailbox.stall.set()
    address = f"deployed-{uuid.uuid4().hex[:8]}@example.com"
    old = workers.start_process()
    new = None
    try:
        _, body = api.post_json("/signups", {"email": address, "name": "Grace"})
        assert mailbox.stalled.wait(60), "the worker never reached the SMTP server"
        # As a rolling deploy does: a new worker starts, and the old one gets SIGTERM, as Docker
        # and Kubernetes send it, to its main process.
        new = workers.start_process()
        os.kill(old.pid, signal.SIGTERM)
        time.sleep(1)
        assert old.poll() is None, "the worker left without waiting for its running job"
        # The SMTP server answers at last (421: try again later): the job ends within the grace.
        mailbox.stall.clear()
        mailbox.release.set()
        assert old.wait(timeout=20) == 0
        job = api.wait_for_job(body["job_id"], timeout=60)
    finally:
        if old.poll() is None:
            kill(old)
        if new is not None:
            stop(new)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert len(mailbox.to(address)) == 1
