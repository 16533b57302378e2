"""Signup webhooks: signed, retried as the receiver asks, rate-limited, kept off private addresses.

A real receiver on 127.0.0.1 verifies every delivery with the `standardwebhooks` library and
answers as each test tells it: an error status, a throttle, an answer dripped a byte at a time,
or no answer at all. The name `ssrf.test` resolves, in this process, to the addresses a test lists.
"""

import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from pydantic import SecretStr

from {{ cookiecutter.package_name }} import ratelimit, webhooks
from {{ cookiecutter.package_name }}.settings import Settings, get_settings

from tests import workers
from tests.conftest import Api, Mailbox, full_error, served
from tests.processes import PROJECT_ROOT, stop
from tests.receiver import SECRET, Receiver, configure, reload_settings
from tests.turns import RecordingClock, assert_within, take_turns

HANG: tuple[int, dict[str, str], bytes] = (0, {}, b"")  # an answer that never comes
# Answers that never end, sent a byte every half second: in the headers, or in a body of no length.
DRIP_HEADERS: tuple[int, dict[str, str], bytes] = (-1, {}, b"HTTP/1.1 200 OK\r\nX-Drip: ")
DRIP_BODY: tuple[int, dict[str, str], bytes] = (-1, {}, b"HTTP/1.1 200 OK\r\n\r\n")


def sign_up(api: Api) -> tuple[str, str]:
    """Sign someone up with a web app made with the webhook settings of the test; the ids of the
    welcome email's job and of the webhook's."""
    address = f"hook-{uuid.uuid4().hex[:8]}@example.com"
    with served(get_settings()) as hooked:
        status, body = hooked.post_json("/signups", {"email": address, "name": "Ada"})
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


@pytest.mark.parametrize("answer", [DRIP_HEADERS, DRIP_BODY], ids=["headers", "body"])
def test_an_answer_dripped_for_ever_is_cut_at_the_deadline_and_tried_again(
    api: Api,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    answer: tuple[int, dict[str, str], bytes],
) -> None:
    # Each read gets a byte well within its timeout: only the call's deadline can end it.
    configure(monkeypatch, WEBHOOK_TIMEOUT="1", WEBHOOK_READ_TIMEOUT="2")
    receiver.answers = [answer]
    _, webhook_job_id = sign_up(api)

    job = api.wait_for_job(webhook_job_id)

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert len(receiver.of(webhook_job_id)) == 2
    held = receiver.dripped.get(timeout=10)
    assert receiver.dripped.empty(), "more than one answer was dripped"
    # The deadline counts from connecting, a moment before the request reached the receiver.
    assert 0.8 <= held < 1.5, f"the dripped answer went on for {held:.2f} s"


def test_a_400_fails_at_once_with_the_status_and_the_start_of_the_body(
    api: Api, receiver: Receiver
) -> None:
    receiver.answers = [(400, {}, b'{"error": "unknown event type"}' + b" " * 100_000)]
    _, webhook_job_id = sign_up(api)

    job = api.wait_for_job(webhook_job_id)

    assert job["status"] == "failed", job
    assert job["attempts"] == 1
    assert "HTTP 400" in job["error"]
    assert "unknown event type" not in job["error"]  # the partner's answer is not public
    detail = full_error(webhook_job_id)
    assert "HTTP 400" in detail
    assert "unknown event type" in detail
    assert len(detail) < 300
    assert len(receiver.of(webhook_job_id)) == 1


def test_errors_summarise_the_answer_apart_from_its_detail(receiver: Receiver) -> None:
    receiver.answers = [(400, {}, b'{"error": "unknown event type"}'), (503, {}, b"internal: db01")]
    event = {"type": "signup.created", "data": {}}

    with pytest.raises(webhooks.DeliveryRefused) as refused:
        webhooks.deliver(str(uuid.uuid4()), event)
    with pytest.raises(webhooks.DeliveryError) as failed:
        webhooks.deliver(str(uuid.uuid4()), event)

    assert refused.value.summary == "the endpoint answered HTTP 400"
    assert str(refused.value) == refused.value.detail == 'HTTP 400: {"error": "unknown event type"}'
    assert failed.value.summary == "the endpoint answered HTTP 503"
    assert str(failed.value) == "HTTP 503: internal: db01"


def test_a_private_address_not_allowed_is_refused(
    api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, WEBHOOK_ALLOWED_HOSTS="")
    _, webhook_job_id = sign_up(api)

    job = api.wait_for_job(webhook_job_id)

    assert job["status"] == "failed", job
    assert job["attempts"] == 1
    assert "127.0.0.1" not in job["error"]  # the public summary names no address
    assert "127.0.0.1" in full_error(webhook_job_id)
    assert "WEBHOOK_ALLOWED_HOSTS" in full_error(webhook_job_id)
    assert receiver.deliveries == []


NOT_PUBLIC = ["localhost", "10.1.2.3", "192.168.0.1", "169.254.1.1", "100.64.0.1", "224.0.0.1"]
NOT_PUBLIC += ["::1", "::ffff:127.0.0.1", "fe80::1", "fc00::1"]


@pytest.mark.parametrize("host", NOT_PUBLIC)
def test_names_and_addresses_that_are_not_public_are_refused(host: str) -> None:
    with pytest.raises(webhooks.DeliveryRefused, match="not a public address"):
        webhooks.resolve(host, 443)


# IPv6 addresses that lead to an IPv4 one, and the address they lead to.
WRAPPED = {
    "::ffff:10.0.0.1": "10.0.0.1",  # IPv4-mapped
    "64:ff9b::7f00:1": "127.0.0.1",  # NAT64, RFC 6052
    "2002:c0a8:1::1": "192.168.0.1",  # 6to4
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "127.0.0.1",  # Teredo: the client, inverted
    "2001:0:a00:1:8000:63bf:a2f1:d8cb": "10.0.0.1",  # Teredo: the server
    "::127.0.0.1": "127.0.0.1",  # IPv4-compatible
}


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Addresses `ssrf.test` resolves to in this process: the next one each time it is asked."""
    answers: list[str] = []
    lock = threading.Lock()
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "ssrf.test":
            with lock:
                host = answers.pop(0)
        return resolve(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def webhooks_to(
    api: Api, receiver: Receiver, resolver: list[str], addresses: list[str], *, allowed: bool
) -> dict[str, dict[str, Any]]:
    """A signup's webhook job for each address, its host resolving to that address (the jobs run
    at once, each resolving the name once), by the address found in its full error, if any."""
    resolver.extend(addresses)
    url = f"http://ssrf.test:{receiver.server.server_port}/hooks/signups"
    with pytest.MonkeyPatch.context() as patch:
        configure(patch, WEBHOOK_URL=url, WEBHOOK_ALLOWED_HOSTS="ssrf.test" if allowed else "")
        jobs = [api.wait_for_job(job_id) for job_id in [sign_up(api)[1] for _ in addresses]]
    reload_settings()
    assert resolver == [], "a job did not resolve the name"
    by_address: dict[str, dict[str, Any]] = {}
    for job in jobs:
        error = full_error(job["id"])
        address = error.partition("ssrf.test resolves to ")[2].partition(",")[0]
        by_address[address] = job
    return by_address


def test_an_ipv6_address_is_judged_by_the_ipv4_address_it_leads_to(
    api: Api, receiver: Receiver, resolver: list[str]
) -> None:
    nat64_local = "64:ff9b:1::5db8:d70e"  # the local-use prefix: refused whatever it carries
    jobs = webhooks_to(api, receiver, resolver, [*WRAPPED, nat64_local], allowed=False)

    assert set(jobs) == {*WRAPPED, nat64_local}, jobs
    for address, leads_to in WRAPPED.items():
        job = jobs[address]
        assert job["status"] == "failed", job
        assert job["attempts"] == 1
        error = full_error(job["id"])
        assert "ssrf.test" not in str(job["error"])  # the public summary names no address
        carried = error.partition("which is not a public address (it leads to ")[2]
        assert leads_to in carried.partition(")")[0].split(", "), error
    error = full_error(jobs[nat64_local]["id"])
    assert "64:ff9b:1::5db8:d70e, which is not a public address;" in error
    assert receiver.deliveries == []


# Refused even for a host in WEBHOOK_ALLOWED_HOSTS.
METADATA = "a cloud metadata address"
NEVER = {
    "169.254.169.254": METADATA,  # AWS, GCP, Azure
    "fd00:ec2::254": METADATA,  # AWS over IPv6
    "169.254.170.2": METADATA,  # ECS task credentials
    "100.100.100.200": METADATA,  # Alibaba
    "::ffff:169.254.169.254": f"{METADATA} (it leads to 169.254.169.254)",
    "64:ff9b::a9fe:a9fe": f"{METADATA} (it leads to 169.254.169.254)",
    "0.0.0.0": "the unspecified address",
    "::": "the unspecified address",
    "::ffff:0.0.0.0": "the unspecified address (it leads to 0.0.0.0)",
}


def test_metadata_and_unspecified_addresses_are_refused_even_for_allowed_hosts(
    api: Api, receiver: Receiver, resolver: list[str]
) -> None:
    never = ["169.254.169.254", "::ffff:169.254.169.254", "::"]
    # And an allowed host is called on a private address, however it is written.
    jobs = webhooks_to(api, receiver, resolver, [*never, "::ffff:127.0.0.1"], allowed=True)

    assert set(jobs) == {*never, ""}, jobs
    for address in never:
        assert jobs[address]["status"] == "failed", jobs[address]
        assert jobs[address]["attempts"] == 1
        assert f"resolves to {address}, {NEVER[address]}" in full_error(jobs[address]["id"])
    assert jobs[""]["status"] == "succeeded", jobs[""]
    assert len(receiver.deliveries) == 1


@pytest.mark.parametrize(("address", "reason"), NEVER.items(), ids=list(NEVER))
def test_every_metadata_and_unspecified_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, address: str, reason: str
) -> None:
    configure(monkeypatch, WEBHOOK_ALLOWED_HOSTS=address)
    try:
        with pytest.raises(webhooks.DeliveryRefused) as refused:
            webhooks.resolve(address, 443)
    finally:
        monkeypatch.undo()
        reload_settings()
    assert f"resolves to {address}, {reason}, which " in str(refused.value)
    assert refused.value.summary == "the endpoint's address is not allowed"


def test_public_addresses_and_allowed_hosts_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    assert webhooks.resolve("93.184.215.14", 443) == "93.184.215.14"
    for wrapped in ["::ffff:93.184.215.14", "64:ff9b::5db8:d70e", "2002:5db8:d70e::1"]:
        assert webhooks.resolve(wrapped, 443) == wrapped
    configure(monkeypatch, WEBHOOK_ALLOWED_HOSTS="Localhost, 10.1.2.3")
    try:
        assert webhooks.resolve("10.1.2.3", 443) == "10.1.2.3"
        assert webhooks.resolve("localhost", 443) in {"127.0.0.1", "::1"}
    finally:
        monkeypatch.undo()
        reload_settings()


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
    reload_settings()


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
        subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT
        )
        for _ in range(2)
    ]
    try:
        # Both ask for turns over the same 2 s, once both are ready: apart, each would take as
        # many as the limit allows one, twice as many as the limit allows them both.
        for process in processes:
            assert process.stdout is not None
            readable, _, _ = select.select([process.stdout], [], [], 60)
            assert readable, "a process was not ready to take turns within 60 s"
            assert process.stdout.readline() == "ready\n"
        start = f"{time.time() + 0.5}\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(start)
            process.stdin.flush()
        outputs = [process.communicate(timeout=30)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()  # one that did not get ready, or start; nothing once it has ended

    assert [process.returncode for process in processes] == [0, 0]
    taken = [[int(t) for t in output.split()] for output in outputs]
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
