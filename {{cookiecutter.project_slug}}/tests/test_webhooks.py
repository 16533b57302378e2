"""Signup webhooks: signed, retried as the receiver asks, rate-limited, kept off private addresses.

A real receiver on 127.0.0.1 verifies every delivery with the `standardwebhooks` library and
answers as each test tells it: an error status, a throttle, or no answer at all.
"""

import base64
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from {{ cookiecutter.package_name }} import ratelimit, webhooks
from {{ cookiecutter.package_name }}.settings import Settings, get_settings

from tests import workers
from tests.conftest import Api, Mailbox
from tests.processes import PROJECT_ROOT, stop
from tests.turns import RecordingClock, assert_within, take_turns

SECRET = "whsec_" + base64.b64encode(b"a test secret of 32 bytes, fixed").decode()
HANG: tuple[int, dict[str, str], bytes] = (0, {}, b"")  # an answer that never comes


@dataclass
class Delivery:
    headers: dict[str, str]
    event: Any  # the verified JSON body; None if the signature did not verify
    arrived: float


class Receiver:
    """An HTTP endpoint for webhooks that verifies each one and answers as it is told."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.answers: list[tuple[int, dict[str, str], bytes]] = []
        self.hung = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.take(dict(self.headers), body)
                status, headers, content = receiver.next_answer()
                if status == 0:
                    receiver.hung.set()
                    receiver.release.wait(10)
                    return
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/signups"

    def take(self, headers: dict[str, str], body: bytes) -> None:
        try:
            event = Webhook(SECRET).verify(body, headers)
        except WebhookVerificationError:
            event = None
        with self._lock:
            self.deliveries.append(Delivery(headers, event, time.monotonic()))

    def next_answer(self) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            return self.answers.pop(0) if self.answers else (204, {}, b"")

    def of(self, job_id: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.headers.get("webhook-id") == job_id]

    def __enter__(self) -> "Receiver":
        serve = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        serve.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def configure(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Set webhook settings in the environment (for worker processes too) and reload them."""
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """Webhooks on, sent to a receiver of this test's own."""
    with Receiver() as started:
        configure(
            monkeypatch,
            WEBHOOK_URL=started.url,
            WEBHOOK_SECRET=SECRET,
            WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
            WEBHOOK_CONNECT_TIMEOUT="1",
            WEBHOOK_READ_TIMEOUT="0.5",
            WEBHOOK_RATE_LIMIT="100",
        )
        yield started
    monkeypatch.undo()
    get_settings.cache_clear()


def sign_up(api: Api) -> tuple[str, str]:
    """Sign someone up; the ids of the welcome email's job and of the webhook's."""
    address = f"hook-{uuid.uuid4().hex[:8]}@example.com"
    status, body = api.post_json("/signups", {"email": address, "name": "Ada"})
    assert status == 202, body
    return body["job_id"], body["webhook_job_id"]


def test_a_signup_is_announced_once_signed_as_standard_webhooks_says(
    api: Api, mailbox: Mailbox, receiver: Receiver
) -> None:
    email_job_id, webhook_job_id = sign_up(api)

    job = api.wait_for_job(webhook_job_id)

    assert job["status"] == "succeeded", job
    assert job["kind"] == "signup_webhook"
    assert job["attempts"] == 1
    assert job["result"]["status_code"] == 204
    (delivery,) = receiver.of(webhook_job_id)
    assert delivery.event is not None, "the signature did not verify"
    assert delivery.event["type"] == "signup.created"
    assert delivery.event["data"]["name"] == "Ada"
    assert delivery.headers["Content-Type"] == "application/json"
    assert api.wait_for_job(email_job_id)["status"] == "succeeded"


def test_503_and_429_are_retried_after_the_wait_asked_for(api: Api, receiver: Receiver) -> None:
    receiver.answers = [(503, {}, b"down for maintenance"), (429, {"Retry-After": "1"}, b"")]
    _, webhook_job_id = sign_up(api)

    job = api.wait_for_job(webhook_job_id)

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 3
    deliveries = receiver.of(webhook_job_id)
    assert len(deliveries) == 3
    assert all(d.event is not None for d in deliveries)  # each attempt freshly signed
    assert deliveries[2].arrived - deliveries[1].arrived >= 0.95  # Retry-After: 1


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    def date(seconds_from_now: int) -> str:
        return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)

    assert webhooks.retry_after("7") == 7.0
    assert webhooks.retry_after(date(30)) == pytest.approx(30, abs=1.5)
    assert webhooks.retry_after(date(-30)) == 0.0
    assert webhooks.retry_after("soon") is None
    assert webhooks.retry_after(None) is None


def test_a_receiver_that_hangs_is_timed_out_and_tried_again(api: Api, receiver: Receiver) -> None:
    receiver.answers = [HANG]
    _, webhook_job_id = sign_up(api)

    job = api.wait_for_job(webhook_job_id)

    assert receiver.hung.is_set()
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert len(receiver.of(webhook_job_id)) == 2


def test_a_400_fails_at_once_with_the_status_and_the_start_of_the_body(
    api: Api, receiver: Receiver
) -> None:
    receiver.answers = [(400, {}, b'{"error": "unknown event type"}' + b" " * 100_000)]
    _, webhook_job_id = sign_up(api)

    job = api.wait_for_job(webhook_job_id)

    assert job["status"] == "failed", job
    assert job["attempts"] == 1
    assert "HTTP 400" in job["error"]
    assert "unknown event type" in job["error"]
    assert len(job["error"]) < 300
    assert len(receiver.of(webhook_job_id)) == 1


def test_a_private_address_not_allowed_is_refused(
    api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, WEBHOOK_ALLOWED_HOSTS="")
    _, webhook_job_id = sign_up(api)

    job = api.wait_for_job(webhook_job_id)

    assert job["status"] == "failed", job
    assert job["attempts"] == 1
    assert "127.0.0.1" in job["error"]
    assert "WEBHOOK_ALLOWED_HOSTS" in job["error"]
    assert receiver.deliveries == []


NOT_PUBLIC = ["localhost", "10.1.2.3", "192.168.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"]
NOT_PUBLIC += ["224.0.0.1", "::1", "::ffff:127.0.0.1", "fe80::1", "fc00::1"]


@pytest.mark.parametrize("host", NOT_PUBLIC)
def test_names_and_addresses_that_are_not_public_are_refused(host: str) -> None:
    with pytest.raises(webhooks.DeliveryRefused, match="not a public address"):
        webhooks.resolve(host, 443)


def test_public_addresses_and_allowed_hosts_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    assert webhooks.resolve("93.184.215.14", 443) == "93.184.215.14"
    configure(monkeypatch, WEBHOOK_ALLOWED_HOSTS="Localhost, 10.1.2.3")
    try:
        assert webhooks.resolve("10.1.2.3", 443) == "10.1.2.3"
        assert webhooks.resolve("localhost", 443) in {"127.0.0.1", "::1"}
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_the_secret_must_be_a_standard_webhooks_secret() -> None:
    url = "https://hooks.example.com/signups"
    Settings(webhook_url=url, webhook_secret=SecretStr(SECRET))
    for secret in ["", "not-a-secret", "whsec_c2hvcnQ="]:
        with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
            Settings(webhook_url=url, webhook_secret=SecretStr(secret))
    with pytest.raises(ValueError, match="WEBHOOK_URL"):
        Settings(webhook_url="ftp://hooks.example.com/", webhook_secret=SecretStr(SECRET))


@pytest.fixture
def limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, float]]:
    """A limit of 3 turns a half second, on a clock that notes when each turn was taken."""
    monkeypatch.setattr(ratelimit, "CLOCK", RecordingClock())
    configure(monkeypatch, WEBHOOK_RATE_LIMIT="3", WEBHOOK_RATE_PERIOD="0.5")
    yield 3, 0.5
    monkeypatch.undo()
    get_settings.cache_clear()


def test_threads_of_one_worker_share_the_limit(limit: tuple[int, float]) -> None:
    host = f"threads-{uuid.uuid4().hex[:8]}.example.com"
    with ThreadPoolExecutor(4) as pool:
        taken = [t for turns in pool.map(take_turns, [host] * 4, [1.2] * 4) for t in turns]

    assert_within(*limit, taken)
    assert len(taken) >= 6  # and the limit gave what it allows: 3 at once, then 3 a half second


@pytest.mark.drill
@pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL")
def test_processes_share_the_limit_through_its_store(limit: tuple[int, float]) -> None:
    host = f"processes-{uuid.uuid4().hex[:8]}.example.com"
    command = [sys.executable, "-m", "tests.turns", host, "2"]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=30)[0] for process in processes]

    assert [process.returncode for process in processes] == [0, 0]
    taken = [[int(t) for t in output.split()] for output in outputs]
    assert all(taken), taken  # both had turns
    assert_within(*limit, taken[0] + taken[1])


@pytest.mark.drill
@pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL")
@pytest.mark.usefixtures("without_thread_worker")
def test_the_rate_limit_holds_across_two_worker_processes(
    api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit, period, signups = 3, 1.0, 8
    # One call at a time per process, so that jobs held back go round to the other one too.
    configure(monkeypatch, WEBHOOK_RATE_LIMIT=str(limit), WEBHOOK_RATE_PERIOD=str(period))
    configure(monkeypatch, WEBHOOK_CONCURRENCY="1")
    processes = []
    for name in ("worker-a", "worker-b"):
        monkeypatch.setenv("APP_NAME", name)  # it names the sender in the User-Agent
        processes.append(workers.start_process())
    # This process takes a turn now and then too, so at least two processes always share the
    # limit, however the broker shares the jobs out between the workers.
    turns: list[float] = []
    done = threading.Event()

    def take_turns_now_and_then() -> None:
        while not done.wait(period):
            if ratelimit.wait_for_turn("127.0.0.1") == 0:
                turns.append(time.monotonic())

    taker = threading.Thread(target=take_turns_now_and_then)
    taker.start()
    try:
        webhook_job_ids = [sign_up(api)[1] for _ in range(signups)]
        jobs = [api.wait_for_job(job_id, timeout=60) for job_id in webhook_job_ids]
    finally:
        done.set()
        taker.join()
        for process in processes:
            stop(process)

    assert [job["status"] for job in jobs] == ["succeeded"] * signups, jobs
    assert [job["attempts"] for job in jobs] == [1] * signups  # held back is not an attempt
    assert len(receiver.deliveries) == signups
    senders = sorted({d.headers["User-Agent"].split()[0] for d in receiver.deliveries})
    # Two processes or more shared the limit: both workers, or a worker and this process.
    assert len(senders) + bool(turns) >= 2, (senders, turns)
    # The calls took as many periods as the limit asks for (the test above times each turn to
    # the millisecond; here a call is timed when it arrives, a moment after its turn, and the
    # first may be late by as much as a loaded machine delays it: half a period is allowed).
    calls = sorted([d.arrived for d in receiver.deliveries] + turns)
    periods = (len(calls) - 1) // limit
    assert calls[-1] - calls[0] >= (periods - 0.5) * period, (len(calls), calls[-1] - calls[0])
