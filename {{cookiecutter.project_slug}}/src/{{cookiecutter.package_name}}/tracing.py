"""Traces: OpenTelemetry spans for requests, jobs, SQL, SMTP and webhook calls, sent over OTLP.

Tracing is on in a process once `configure` finds OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set: it loads the SDK, exports spans in batches over
OTLP/HTTP, and traces SQL statements and HTTP calls. The SDK reads the other standard variables
itself (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, ...).

Off, nothing of the SDK is imported and no span is made: the API's own tracer does nothing,
requests do not read `traceparent`, jobs carry no trace context and log lines no trace ids.

A job keeps its trace in its record (`Job.trace_context`): the context of the request that
recorded it, in W3C Trace Context form, so every run of the job (redelivered, published again by
the reconciler, retried from the dashboard) is a span of the request's trace.
"""

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import Engine

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Probes and scrapes, every few seconds: no trace of their own.
UNTRACED_PATHS = ("/health", "/metrics")
_W3C = TraceContextTextMapPropagator()
_started = False


def configure(role: str) -> bool:
    """Export this process's spans if an OTLP endpoint is set; once per process. Whether tracing
    is on. `role` ("web", "worker") names the service unless OTEL_SERVICE_NAME does."""
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    if not _started and not disabled and any(os.environ.get(name) for name in ENDPOINTS):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        start(role, BatchSpanProcessor(OTLPSpanExporter()))
    return _started


def start(role: str, processor: "SpanProcessor") -> None:
    """Make spans with the SDK, handing them to `processor`, and trace SQL and HTTP calls."""
    global _started
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        named = f"{{ cookiecutter.project_slug }}-{role}"
        resource = resource.merge(Resource({SERVICE_NAME: named}))
    # OTEL_TRACES_SAMPLER, if set, chooses; else a trace starts with a request or a job only.
    sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ParentBased(_requests_and_jobs())
    provider = TracerProvider(resource=resource, sampler=sampler)
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    # The stable semantic conventions (FastAPI's own), unless OTEL_SEMCONV_STABILITY_OPT_IN says.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
    HTTPXClientInstrumentor().instrument()
    _started = True


def trace_sql(engine: Engine) -> Engine:
    """`engine`, its statements traced if tracing is on.

    The instrumentation's engine tracer is attached directly: its instrumentor would also wrap
    SQLAlchemy's asyncio engine, which needs greenlet since SQLAlchemy 2.1.
    """
    if _started:
        from opentelemetry import metrics
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

        name = "opentelemetry.instrumentation.sqlalchemy"
        usage = metrics.get_meter(name).create_up_down_counter("db.client.connections.usage")
        EngineTracer(trace.get_tracer(name), engine, usage)  # type: ignore[no-untyped-call]
    return engine


def _requests_and_jobs() -> Any:
    """Start no trace for a lone SQL statement or HTTP call (the claim of a job, a lease renewal,
    the scheduler's sweeps): one trace each would bury the traces of requests and jobs."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class RequestsAndJobs(Sampler):
        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: trace.SpanKind | None = None,
            attributes: Any = None,
            links: Sequence[trace.Link] | None = None,
            trace_state: trace.TraceState | None = None,
        ) -> SamplingResult:
            lone_call = kind is trace.SpanKind.CLIENT
            decision = Decision.DROP if lone_call else Decision.RECORD_AND_SAMPLE
            return SamplingResult(decision, None if lone_call else attributes, trace_state)

        def get_description(self) -> str:
            return "RequestsAndJobs"

    return RequestsAndJobs()


def carrier() -> dict[str, str] | None:
    """The current trace context, to keep with a job (None outside a trace)."""
    found: dict[str, str] = {}
    _W3C.inject(found)
    return found or None


def parent(carried: dict[str, str] | None) -> Context:
    """The context a job's run continues: the one kept with it, or a new trace."""
    return _W3C.extract(carried or {}, context=Context())
