"""Traces: a request's trace goes on through its jobs (every run of them), their SMTP exchange,
their webhook call and their log lines; spans go out over OTLP only when an endpoint is set.

The spans of this process are caught with the SDK's in-memory exporter: the thread worker runs
the jobs in this process.
"""

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from {{ cookiecutter.package_name }} import database, logs, records, tracing
from {{ cookiecutter.package_name }}.settings import get_settings

from tests import workers
from tests.conftest import PROJECT_ROOT, Api, Mailbox, served
from tests.receiver import Receiver
from tests.test_dashboard import PERMANENT_REFUSAL, send
from tests.test_logs import capture, logged
from tests.test_reconcile import overdue


def traceparent() -> tuple[str, str]:
    """A caller's `traceparent` header, and its trace id."""
    trace_id = uuid.uuid4().hex
    return f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01", trace_id


@pytest.fixture(scope="session")
def exporter() -> InMemorySpanExporter:
    """Tracing on in this process from now on, its spans kept in memory."""
    caught = InMemorySpanExporter()
    tracing.start("tests", SimpleSpanProcessor(caught))
    database._engine.cache_clear()  # engines made from now on have their SQL traced
    return caught


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


@pytest.fixture
def logs_restored() -> Iterator[None]:
    yield
    logs.configure()


def job_spans(exporter: InMemorySpanExporter, job_id: str, runs: int = 1) -> list[ReadableSpan]:
    """The spans of a job's runs, once there are `runs`: a run's span ends a moment after its
    outcome is written."""
    deadline = time.monotonic() + 5
    while True:
        found = [s for s in exporter.get_finished_spans() if _attribute(s, "job.id") == job_id]
        if len(found) >= runs or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def requests(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    server = trace.SpanKind.SERVER
    return [s for s in exporter.get_finished_spans() if s.kind is server and s.name == name]


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    return [
        span
        for span in exporter.get_finished_spans()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


def test_a_requests_trace_goes_on_through_its_jobs_their_calls_and_their_logs(
    api: Api,
    mailbox: Mailbox,
    spans: InMemorySpanExporter,
    receiver: Receiver,
    logs_restored: None,
) -> None:
    header, trace_id = traceparent()
    address = f"traced-{uuid.uuid4().hex[:8]}@example.com"
    with served(get_settings()) as hooked:  # with the webhook, made while tracing is on
        json_logs = capture("json")  # once the app has set up the logs its own way
        status, body = hooked.post_json(
            "/signups", {"email": address, "name": "Tia"}, headers={"traceparent": header}
        )
    assert status == 202, body
    email_job, webhook_job = body["job_id"], body["webhook_job_id"]
    assert api.wait_for_job(email_job)["status"] == "succeeded"
    assert api.wait_for_job(webhook_job)["status"] == "succeeded"

    (request,) = requests(spans, "POST /signups")
    assert _trace_id(request) == trace_id  # continued, not started afresh
    assert request.parent is not None
    assert request.parent.span_id == int(header[36:52], 16)
    (email_run,) = job_spans(spans, email_job)
    (webhook_run,) = job_spans(spans, webhook_job)
    for run, kind in ((email_run, "welcome_email"), (webhook_run, "signup_webhook")):
        assert _trace_id(run) == trace_id
        assert run.kind is trace.SpanKind.CONSUMER
        assert dict(run.attributes or {}) == {
            "job.id": _attribute(run, "job.id"),
            "job.kind": kind,
            "job.attempt": 1,
            "job.outcome": "succeeded",
        }
    # One span for the SMTP exchange, one for the HTTP call, each under its job's run.
    (smtp,) = [s for s in children(spans, email_run) if s.name == "smtp send"]
    assert _attribute(smtp, "server.port") == get_settings().smtp_port
    (call,) = [s for s in children(spans, webhook_run) if _attribute(s, "http.request.method")]
    assert _attribute(call, "http.response.status_code") == 204
    # The partner can join the trace: the call carried it.
    (delivery,) = receiver.of(webhook_job)
    _, called_trace, called_span, _ = delivery.headers["traceparent"].split("-")
    assert (called_trace, called_span) == (trace_id, f"{call.context.span_id:016x}")
    # The SQL of the run, traced under it; no SQL statement makes a trace of its own.
    assert any(_attribute(s, "db.system.name") for s in children(spans, email_run))
    roots = [s for s in spans.get_finished_spans() if s.parent is None]
    assert not [s for s in roots if s.kind is trace.SpanKind.CLIENT]

    logged(json_logs, "job succeeded", email_job)
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    in_run = [line for line in lines if line.get("job_id") == email_job and "attempt" in line]
    assert {line["event"] for line in in_run} >= {"job started", "job succeeded"}
    assert {(line["trace_id"], line["span_id"]) for line in in_run} == {
        (trace_id, f"{email_run.context.span_id:016x}")
    }


def test_a_request_without_traceparent_starts_a_trace_its_jobs_join(
    api: Api, mailbox: Mailbox, spans: InMemorySpanExporter
) -> None:
    signup = {"email": "untraced@example.com", "name": "Uma"}
    with served() as traced:  # an app made while tracing is on
        status, body = traced.post_json("/signups", signup)
    assert status == 202, body
    assert api.wait_for_job(body["job_id"])["status"] == "succeeded"

    (request,) = requests(spans, "POST /signups")
    assert request.parent is None
    (run,) = job_spans(spans, body["job_id"])
    assert run.context.trace_id == request.context.trace_id


def test_a_job_published_again_or_retried_stays_in_its_trace(
    api: Api, mailbox: Mailbox, spans: InMemorySpanExporter
) -> None:
    # Recorded in a request's trace, never published: the reconciler publishes it again.
    header, trace_id = traceparent()
    with database.session() as db:
        (job, *_) = records.create_signup_jobs(
            db, f"lost-{uuid.uuid4().hex[:8]}@example.com", "Lu", False, {"traceparent": header}
        )
    overdue(job.id)
    workers.reconcile_now()
    assert api.wait_for_job(job.id)["status"] == "succeeded"
    (run,) = job_spans(spans, job.id)
    assert _trace_id(run) == trace_id

    # An email the server refused for good, retried from the dashboard in another trace.
    header, trace_id = traceparent()
    other, _ = traceparent()
    mailbox.refuse_next, mailbox.refusal = 1, PERMANENT_REFUSAL
    address = {"email": f"refused-{uuid.uuid4().hex[:8]}@example.com", "name": "Ro"}
    with served() as traced:
        status, body = traced.post_json("/signups", address, headers={"traceparent": header})
        assert status == 202, body
        assert api.wait_for_job(body["job_id"])["status"] == "failed"
        retry = f"/jobs/{body['job_id']}/retry"
        assert send(traced, "POST", retry, headers={"traceparent": other}).status_code == 202
    assert api.wait_for_job(body["job_id"])["status"] == "succeeded"
    failed, succeeded = job_spans(spans, body["job_id"], runs=2)
    assert {_trace_id(failed), _trace_id(succeeded)} == {trace_id}
    assert _attribute(failed, "job.outcome") == "failed"
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert _attribute(succeeded, "job.outcome") == "succeeded"


def test_standard_library_log_lines_carry_the_trace_too(exporter: InMemorySpanExporter) -> None:
    stream = capture("json")
    try:
        with trace.get_tracer(__name__).start_as_current_span("work") as span:
            logging.getLogger("elsewhere").warning("inside")
        logging.getLogger("elsewhere").warning("outside")
    finally:
        logs.configure()
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines()[-2:])
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "trace_id" not in outside


class Collector:
    """An OTLP/HTTP endpoint of the test's own: it keeps what it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.received.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"


# A web process that answers one request carrying a traceparent, then exits.
ONE_REQUEST = """
import sys
from opentelemetry import trace
from {{ cookiecutter.package_name }}.web import create_app
{%- if cookiecutter.web_framework == "fastapi" %}
from fastapi.testclient import TestClient

TestClient(create_app()).get("/jobs/unknown", headers={"traceparent": sys.argv[1]})
{%- else %}

create_app().test_client().get("/jobs/unknown", headers={"traceparent": sys.argv[1]})
{%- endif %}
shutdown = getattr(trace.get_tracer_provider(), "shutdown", None)
if shutdown:
    shutdown()  # sends what is left to export
loaded = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.instrumentation")
print(sorted(name for name in sys.modules if name.startswith(loaded)))
"""


@pytest.mark.parametrize("endpoint", [True, False], ids=["endpoint set", "no endpoint"])
def test_spans_are_exported_over_otlp_only_when_an_endpoint_is_set(endpoint: bool) -> None:
    collector = Collector()
    header, trace_id = traceparent()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.url
    ran = subprocess.run(
        [sys.executable, "-c", ONE_REQUEST, header],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    tracing_modules = ran.stdout.strip().splitlines()[-1]
    collector.server.shutdown()
    if endpoint:
        ((path, body),) = collector.received
        assert path == "/v1/traces"
        assert bytes.fromhex(trace_id) in body  # the request's span, in the caller's trace
        assert b"{{ cookiecutter.project_slug }}-web" in body  # service.name
    else:
        assert collector.received == []
        assert tracing_modules == "[]"  # not even imported


def _attribute(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


def _trace_id(span: ReadableSpan) -> str:
    return f"{span.context.trace_id:032x}"
