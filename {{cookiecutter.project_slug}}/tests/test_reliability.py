"""What happens when a worker dies, the broker is down, or the database moves on."""

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests import workers
from tests.conftest import TEST_ENV, Api, Mailbox, count_rows, stored_files
from tests.processes import kill, stop, web_process


@pytest.mark.drill
@pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL")
def test_a_worker_killed_mid_job_is_replaced_and_the_email_sent_once(
    api: Api, mailbox: Mailbox, without_thread_worker: None
) -> None:
    mailbox.stall.set()
    address = f"killed-{uuid.uuid4().hex[:8]}@example.com"
    first = workers.start_process()
    try:
        _, body = api.post_json("/signups", {"email": address, "name": "Barbara"})
        assert mailbox.stalled.wait(60), "the worker never reached the SMTP server"
    finally:
        kill(first)
    mailbox.stall.clear()
    mailbox.release.set()
    assert api.get(f"/jobs/{body['job_id']}")[1]["status"] == "running"

    started = time.monotonic()
    second = workers.start_process()
    try:
        job = api.wait_for_job(body["job_id"], timeout=60)
    finally:
        stop(second)

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert len(mailbox.to(address)) == 1
    print(f"picked up again {time.monotonic() - started:.1f}s after the replacement started")


def call(request: urllib.request.Request | str) -> tuple[int, Any]:
    """Send a request; the status and JSON body, whether it succeeded or not."""
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def post_json(url: str, body: Any) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    return call(urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers))


def post_file(url: str, filename: str, content: bytes) -> tuple[int, Any]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode(),
            b"Content-Type: text/csv\r\n\r\n",
            content,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return call(urllib.request.Request(url, data=body, headers=headers))


@pytest.fixture(scope="module")
def web_without_broker(migrated_database: None) -> Iterator[str]:
    """The Procfile's web process, started while the broker cannot be reached."""
    # With webhooks on, a signup records two jobs: both must be taken back.
    webhook = {"WEBHOOK_URL": "https://hooks.example.com/", "WEBHOOK_SECRET": "whsec_" + "A" * 32}
    with web_process(BROKER_URL=workers.UNREACHABLE_BROKER_URL, **webhook) as base:
        yield base


def test_broker_down_web_still_serves_and_refuses_jobs_cleanly(web_without_broker: str) -> None:
    status, body = call(f"{web_without_broker}/health")
    assert status == 503
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("unavailable")

    rows, files = count_rows(), stored_files()
    started = time.monotonic()
    signup = {"email": "a@example.com", "name": "A"}
    status, body = post_json(f"{web_without_broker}/signups", signup)
    assert status == 503
    assert "queue" in body["error"]
    assert time.monotonic() - started < 10

    started = time.monotonic()
    status, body = post_file(f"{web_without_broker}/files", "data.csv", b"a,b\n1,2\n")
    assert status == 503
    assert "queue" in body["error"]
    assert time.monotonic() - started < 10

    assert count_rows() == rows
    assert stored_files() == files


def test_broker_down_a_retry_answers_503_and_the_job_stays_failed(
    web_without_broker: str, api: Api, mailbox: Mailbox
) -> None:
    mailbox.refusal, mailbox.refuse_next = "550 5.1.1 Mailbox unavailable", 1
    _, body = api.post_json("/signups", {"email": "refused@example.com", "name": "R"})
    before = api.wait_for_job(body["job_id"])
    assert before["status"] == "failed", before

    credentials = f"{TEST_ENV['DASHBOARD_USERNAME']}:{TEST_ENV['DASHBOARD_PASSWORD']}"
    headers = {"Authorization": f"Basic {base64.b64encode(credentials.encode()).decode()}"}
    url = f"{web_without_broker}/jobs/{body['job_id']}/retry"
    status, answer = call(urllib.request.Request(url, method="POST", headers=headers))

    assert status == 503, answer
    assert "still failed" in answer["error"]
    assert api.get(f"/jobs/{body['job_id']}")[1] == before


def test_health_is_ok_when_broker_and_database_answer(api: Api) -> None:
    status, body = api.get("/health")
    assert status == 200, body
    assert body == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
