"""Each job event is one log line that names the job and its kind, readable or JSON."""

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Api, Mailbox

# isort: split
from {{ cookiecutter.package_name }} import logs


def capture(log_format: str) -> io.StringIO:
    """Configure the logs as a process does, and catch what they print."""
    logs.configure(log_format)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    return stream


def logged(stream: io.StringIO, *words: str, timeout: float = 5) -> list[str]:
    """The lines that contain all of `words`, once one does: a job's record says how it ended a
    moment before its worker logs it."""
    deadline = time.monotonic() + timeout
    while not (found := [x for x in stream.getvalue().splitlines() if all(w in x for w in words)]):
        assert time.monotonic() < deadline, f"no log line with {words}"
        time.sleep(0.05)
    return found


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    yield capture("json")
    logs.configure()


@pytest.fixture
def console_logs() -> Iterator[io.StringIO]:
    yield capture("console")
    logs.configure()


def test_a_jobs_events_are_json_lines_with_its_id_and_kind(
    api: Api, mailbox: Mailbox, json_logs: io.StringIO
) -> None:
    mailbox.refuse_next = 1  # one retry
    status, body = api.post_json("/signups", {"email": "logged@example.com", "name": "Lin"})
    assert status == 202, body
    assert api.wait_for_job(body["job_id"])["status"] == "succeeded"
    logged(json_logs, "job succeeded", body["job_id"])

    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    events = [line for line in lines if line.get("job_id") == body["job_id"]]
    assert {line["kind"] for line in events} == {"welcome_email"}
    assert all(line["timestamp"] and line["level"] for line in events)
    # The web process logs "enqueued" after the broker took the job: a worker may start it first.
    assert [line["event"] for line in events if line["event"] == "job enqueued"] == ["job enqueued"]
    in_worker = [(line["event"], line["attempt"]) for line in events if "attempt" in line]
    assert in_worker == [
        ("job started", 1),
        ("job retrying", 1),
        ("job started", 2),
        ("job succeeded", 2),
    ]
    (retrying,) = (line for line in events if line["event"] == "job retrying")
    assert retrying["level"] == "warning"
    assert "451" in retrying["error"]


def test_a_failed_job_is_logged_readably(
    api: Api, mailbox: Mailbox, console_logs: io.StringIO
) -> None:
    status, body = api.upload("/files", "file", "broken.csv", b"a,b\n\xff\xfe\x00bad", "text/csv")
    assert status == 202, body
    assert api.wait_for_job(body["job_id"])["status"] == "failed"

    (line,) = logged(console_logs, "job failed", body["job_id"])
    assert f"job_id={body['job_id']}" in line
    assert "kind=process_file" in line
    assert not line.startswith("{")
