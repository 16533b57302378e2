"""The benchmark's plan (benchmarks/run.py) and its SMTP server, checked without running the
benchmark: it is no test itself."""

import concurrent.futures
import http.client
import re
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage

import pytest

from benchmarks.load import HERE
from benchmarks.otlp_sink import OtlpSink
from benchmarks.run import combination_name, plan
from benchmarks.sides import SEED, seed_commands
from tests.combinations import INVALID, VALID
from tests.conftest import free_port


def test_the_benchmark_names_and_measures_every_valid_combination() -> None:
    assert plan([]) == VALID
    assert [plan([combination_name(combo)]) for combo in VALID] == [[combo] for combo in VALID]


def test_the_quick_benchmark_measures_each_queue_and_framework_on_redis_and_sqlite() -> None:
    quick = plan([], quick=True)
    pairs = {(combo["task_queue"], combo["web_framework"]) for combo in VALID}
    assert {(combo["task_queue"], combo["web_framework"]) for combo in quick} == pairs
    assert len(quick) == len(pairs)
    assert all(combo["broker"] == "redis" and combo["database"] == "sqlite" for combo in quick)
    assert plan(["arq-flask-redis-postgresql"], quick=True) == [
        {"task_queue": "arq", "web_framework": "flask", "broker": "redis", "database": "postgresql"}
    ]


@pytest.mark.parametrize("name", [combination_name(INVALID[0]), "rq-fastapi-redis-sqlite"])
def test_the_benchmark_refuses_what_cannot_be_baked(name: str) -> None:
    with pytest.raises(SystemExit, match="not valid"):
        plan([name])


@pytest.mark.parametrize("combo", VALID, ids=combination_name)
def test_every_combination_has_its_bare_app(combo: dict[str, str]) -> None:
    for command in seed_commands(combo).values():
        module = re.search(r"(\w+)[:.](app|WorkerSettings)\b|-A (\w+)", command)
        assert module is not None, command
        name = module.group(1) or module.group(3)
        assert (SEED / f"{name}.py").is_file(), command


def test_the_delayed_smtp_server_answers_many_messages_at_once() -> None:
    port, delay, count = free_port(), 0.4, 8
    sink = subprocess.Popen(
        [sys.executable, str(HERE / "smtp_sink.py"), str(port), str(int(delay * 1000))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"

        def send(n: int) -> float:
            message = EmailMessage()
            message["From"], message["To"] = "a@example.com", f"to-{n}@example.com"
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                began = time.monotonic()
                smtp.send_message(message)
                return time.monotonic() - began

        began = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            waits = list(pool.map(send, range(count)))
        elapsed = time.monotonic() - began
        lines = [sink.stdout.readline().split() for _ in range(count)]
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    assert min(waits) >= delay  # each message waited for its answer,
    assert elapsed < 2 * delay  # all of them at once
    assert sorted(recipient for _, recipient in lines) == sorted(
        f"to-{n}@example.com" for n in range(count)
    )


def test_the_otlp_receiver_counts_the_span_batches_posted_to_it() -> None:
    with OtlpSink() as sink:
        host, port = sink.endpoint.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        statuses = []
        for path, body in [
            ("/v1/traces", b"\x0a\x02ab"),
            ("/v1/traces", b"xyz"),
            ("/v1/logs", b"q"),
        ]:
            connection.request("POST", path, body, {"Content-Type": "application/x-protobuf"})
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        connection.close()
        assert statuses == [200, 200, 404]  # one connection kept for every batch
        assert sink.counts() == {"span_batches": 2, "span_bytes": 7}
