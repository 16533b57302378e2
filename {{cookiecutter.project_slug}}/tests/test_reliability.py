"""What happens when a worker dies, the broker is down, or the database moves on."""

{% if cookiecutter.task_queue == "arq" -%}
import asyncio
{% endif -%}
import base64
import json
{%- if cookiecutter.task_queue == "arq" %}
import socket
import threading
{%- endif %}
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
{%- if cookiecutter.task_queue == "arq" %}

from {{ cookiecutter.package_name }}.client import Client
from {{ cookiecutter.package_name }}.jobs import BrokerUnavailable
from {{ cookiecutter.package_name }}.settings import get_settings
{%- endif %}

from tests import workers
from tests.conftest import TEST_ENV, Api, Mailbox, count_rows, {% if cookiecutter.task_queue == "arq" %}served, {% endif %}stored_files
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


def test_broker_down_the_idempotency_key_is_given_back(
    web_without_broker: str, api: Api, mailbox: Mailbox
) -> None:
    key, signup = str(uuid.uuid4()), {"email": "given-back@example.com", "name": "G"}
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    data = json.dumps(signup).encode()
    url = f"{web_without_broker}/signups"
    status, body = call(urllib.request.Request(url, data=data, headers=headers))
    assert status == 503, body

    # Sent again once the queue is back: it is carried out, not refused as under way.
    status, body = api.post_json("/signups", signup, headers={"Idempotency-Key": key})
    assert status == 202, body
    assert api.wait_for_job(body["job_id"])["status"] == "succeeded"


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
{%- if cookiecutter.task_queue == "arq" %}


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A server that accepts connections and never answers: a broker that hangs."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()
    for connection in held:
        connection.close()


def test_a_broker_that_never_answers_is_refused_in_seconds(
    silent_broker: str, migrated_database: None
) -> None:
    settings = get_settings().model_copy(update={"broker_url": silent_broker})
    rows = count_rows()
    with served(settings) as hanging:
        started = time.monotonic()
        status, body = hanging.post_json("/signups", {"email": "hang@example.com", "name": "H"})
        assert (status, time.monotonic() - started < 12) == (503, True), body
    assert count_rows() == rows  # the signup and its job withdrawn

    client = Client(settings)  # and the bound on every call, should the socket's not come first
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"no answer in 0\.2s"):
        client._call(asyncio.sleep(60), timeout=0.2)
    assert time.monotonic() - started < 1
    client.close()
{%- endif %}
