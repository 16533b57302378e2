"""POST /jobs/{id}/cancel: a job that has not run never does, a file job that runs stops and its
files go, and an email being sent cannot be unsent."""

import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from {{ cookiecutter.package_name }} import database, records
from {{ cookiecutter.package_name }}.settings import get_settings

from tests import workers
from tests.conftest import Api, Mailbox, served, stored_files
from tests.test_dashboard import dashboard, metrics, send, signup
from tests.test_logs import capture, logged

# isort: split
from {{ cookiecutter.package_name }} import logs

CANCELLED_EMAILS = ("jobs", (("kind", "welcome_email"), ("status", "cancelled")))


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    yield capture("json")
    logs.configure()


def cancel(api: Api, job_id: str) -> tuple[int, Any]:
    response = send(api, "POST", f"/jobs/{job_id}/cancel")
    return response.status_code, json.loads(response.text)


def wait_for(api: Api, job_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := api.get(f"/jobs/{job_id}")[1])["status"] != status:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return dict(job)


def test_a_queued_job_cancelled_never_runs(
    api: Api, mailbox: Mailbox, worker: workers.ThreadWorker, json_logs: io.StringIO
) -> None:
    before = metrics(api).get(CANCELLED_EMAILS, 0)
    worker.stop()  # nobody takes the job from the queue until it is cancelled
    try:
        job_id, address = signup(api)
        page = send(api, "GET", f"/dashboard/jobs/{job_id}").text
        assert f'action="/dashboard/jobs/{job_id}/cancel"' in page
        response = send(api, "POST", f"/dashboard/jobs/{job_id}/cancel")
        assert response.status_code == 303, response.text
        (line,) = logged(json_logs, "job cancelled", job_id)
        assert json.loads(line)["kind"] == "welcome_email"
    finally:
        worker.start()

    # The worker receives the message and drops it (the claim finds the job cancelled), before
    # a job queued after it has run.
    control, _ = signup(api)
    assert api.wait_for_job(control)["status"] == "succeeded"
    time.sleep(0.5)
    job = api.get(f"/jobs/{job_id}")[1]
    assert (job["status"], job["attempts"], job["started_at"]) == ("cancelled", 0, None), job
    assert job["finished_at"] is not None
    assert mailbox.to(address) == []

    assert metrics(api)[CANCELLED_EMAILS] == before + 1
    assert dashboard(api).counts[("welcome_email", "cancelled")] == before + 1
    assert job_id in dashboard(api, "?status=cancelled").jobs
    assert "/cancel" not in send(api, "GET", f"/dashboard/jobs/{job_id}").text


def test_a_retrying_job_cancelled_never_runs_again(
    api: Api, mailbox: Mailbox, json_logs: io.StringIO
) -> None:
    mailbox.refuse_next = 100
    job_id, address = signup(api)
    deadline = time.monotonic() + 30
    while True:  # between two attempts: one that runs cannot be cancelled
        assert time.monotonic() < deadline, "the job never waited for a retry"
        if api.get(f"/jobs/{job_id}")[1]["status"] == "retrying":
            status, answer = cancel(api, job_id)
            if status == 200:
                break
            assert status == 409, answer
        time.sleep(0.02)
    mailbox.refuse_next = 0
    attempts = answer["attempts"]

    logged(json_logs, "job skipped", job_id, timeout=20)  # its retry was delivered, and dropped
    job = api.get(f"/jobs/{job_id}")[1]
    assert (job["status"], job["attempts"]) == ("cancelled", attempts), job
    assert mailbox.to(address) == []


def test_a_running_file_job_stops_and_its_files_go(api: Api) -> None:
    # Tens of millions of rows: a few seconds of analysis, reported every second.
    big = get_settings().model_copy(update={"max_upload_bytes": 64 * 1024 * 1024})
    content = b"n\n" + b"1\n" * 20_000_000
    with served(big) as client:
        status, body = client.upload("/files", "file", "big.csv", content, "text/csv")
    assert status == 202, body
    json_logs = capture("json")  # after the app above set up its logs
    try:
        cancel_while_it_runs(api, body["job_id"], json_logs)
    finally:
        logs.configure()


def cancel_while_it_runs(api: Api, job_id: str, json_logs: io.StringIO) -> None:
    running = wait_for(api, job_id, "running")
    with database.session() as db:
        key = records.get_job(db, job_id).payload["key"]  # type: ignore[union-attr]
    assert key in stored_files()

    started = time.monotonic()
    status, answer = cancel(api, job_id)
    assert status == 200, answer
    assert answer["status"] == "cancelled"
    # The worker stops at its next progress report, and says so.
    (line,) = logged(json_logs, "job cancelled", job_id, '"attempt"', timeout=10)
    stopped = time.monotonic() - started

    assert json.loads(line)["kind"] == "process_file"
    assert not {key, f"{key}.thumbnail.png"} & stored_files()
    job = api.get(f"/jobs/{job_id}")[1]
    assert (job["status"], job["result"]) == ("cancelled", None), job
    assert running["progress"] <= job["progress"] < 1
    with database.session() as db:
        (attempt,) = records.attempts_of(db, job_id)
    assert (attempt.outcome, attempt.error) == ("cancelled", "cancelled while it ran")
    assert attempt.ended_at is not None
    print(f"the worker stopped {stopped:.2f}s after the cancel")


def test_an_email_being_sent_cannot_be_unsent(api: Api, mailbox: Mailbox) -> None:
    mailbox.stall.set()  # the SMTP server holds the message until released
    try:
        job_id, address = signup(api)
        assert mailbox.stalled.wait(30), "the worker never reached the SMTP server"
        status, answer = cancel(api, job_id)
        assert status == 409, answer
        assert "being sent and cannot be unsent" in answer["error"]
        assert api.get(f"/jobs/{job_id}")[1]["status"] == "running"
    finally:
        mailbox.stall.clear()
        mailbox.release.set()  # it answers 421 at last: the email is sent again, once

    job = api.wait_for_job(job_id)
    assert job["status"] == "succeeded", job
    assert len(mailbox.to(address)) == 1


def test_unknown_and_finished_jobs_cannot_be_cancelled(api: Api) -> None:
    for unknown in (str(uuid.uuid4()), "nope"):
        status, answer = cancel(api, unknown)
        assert status == 404, answer

    job_id, _ = signup(api)
    finished = api.wait_for_job(job_id)
    status, answer = cancel(api, job_id)
    assert status == 409, answer
    assert "succeeded" in answer["error"]
    assert api.get(f"/jobs/{job_id}")[1] == finished
