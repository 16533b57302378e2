"""Logs: one format for every process, readable or JSON (`LOG_FORMAT`), at `LOG_LEVEL`.

Our own events are structlog calls with fields (`job_id`, `kind`, ...); the standard library's
loggers ({% if cookiecutter.task_queue == "celery" %}Celery{% else %}ARQ{% endif %}, {% if cookiecutter.web_framework == "fastapi" %}uvicorn{% else %}gunicorn{% endif %}, SQLAlchemy, ours) go through the same renderer, so every line of a
process has the same shape: `key=value` pairs for people, one JSON object for log collectors.
"""

import logging.config
import sys
from typing import Any

import structlog
from opentelemetry import trace

from .settings import get_settings

# Loggers that servers and queues give handlers of their own: send them to ours instead.
TAKEN_OVER = (
{%- if cookiecutter.task_queue == "celery" %}
    "celery",
{%- else %}
    "arq",
{%- endif %}
{%- if cookiecutter.web_framework == "fastapi" %}
    "uvicorn",
    "uvicorn.access",
{%- else %}
    "gunicorn.error",
    "gunicorn.access",
{%- endif %}
)


def _add_trace_ids(_: Any, __: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    """The trace and span a line was written in, if any (see tracing.py)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = trace.format_trace_id(context.trace_id)
        event["span_id"] = trace.format_span_id(context.span_id)
    return event


# Fields every line gets, whether it comes from structlog or from a standard library logger.
_SHARED: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    _add_trace_ids,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure(log_format: str | None = None) -> None:
    """Send every logger of this process to stderr in the chosen format; safe to call again."""
    settings = get_settings()
    log_format = log_format or settings.log_format
    # A call below the level returns at once, before any processor runs: the filtering logger's
    # methods for those levels do nothing. The others are rendered once, by the handler.
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(settings.log_level),
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"structlog": {"()": _formatter, "log_format": log_format}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "structlog",
                    "stream": sys.stderr,
                }
            },
            "root": {"handlers": ["stderr"], "level": settings.log_level},
            "loggers": {name: {"handlers": [], "propagate": True} for name in TAKEN_OVER},
        }
    )


def _formatter(log_format: str) -> structlog.stdlib.ProcessorFormatter:
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
        tracebacks: list[structlog.types.Processor] = [structlog.processors.dict_tracebacks]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        tracebacks = []
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *tracebacks,
            renderer,
        ],
    )
