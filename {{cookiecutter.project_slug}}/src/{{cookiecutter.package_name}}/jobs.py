"""Run a recorded job once: the same for every queue, free of queue details.

The queue layer delivers a job id at least once; `run` makes each delivery safe. It claims the
record (so one run at a time is the job's current one), does the work while its lease is kept
alive, records the outcome (held while the database is away), and asks the queue to try again
later, with exponential backoff and jitter, when a failure may pass. A transient error with a
`retry_after` (seconds the other side asked for) waits at least that long, up to
RETRY_BACKOFF_MAX; work that was held back before it started (`webhooks.Throttled`) comes back
after the delay it names, and that claim does not count as an attempt. A job that cannot be
claimed because the database is unavailable waits too, without spending an attempt.
"""

import random
import time
from collections.abc import Callable
from typing import Any

import structlog
from opentelemetry import trace
from sqlalchemy import Connection

from . import database, files, mail, runs, tracing, webhooks
from .leases import DATABASE_UNAVAILABLE, keeper, record
from .models import JobKind, JobStatus, Outcome
from .runs import Claim, Run
from .settings import get_settings

logger = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

TRANSIENT_ERRORS = (
    mail.TransientMailError,
    webhooks.DeliveryError,
    files.StorageFull,  # a thumbnail: the disk may have room again later
    *DATABASE_UNAVAILABLE,
)


class RetryLater(Exception):
    """Deliver this job again after `delay` seconds."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(f"retry in {delay:.1f}s: {reason}")
        self.delay = delay


class BrokerUnavailable(Exception):
    """The job could not be handed to the broker."""


class Stopped(Exception):
    """The run is no longer the job's current one: it was cancelled, or taken over."""

    def __init__(self, status: JobStatus | None) -> None:
        super().__init__(f"the job is {status or 'gone'}")
        self.cancelled = status is JobStatus.CANCELLED


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1, 2, ...): half fixed, half random."""
    settings = get_settings()
    ceiling = min(settings.retry_backoff_max, settings.retry_backoff * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_delay(attempt: int, asked: float | None = None) -> float:
    """The backoff after attempt `attempt`, or longer if the other side `asked`, within the cap."""
    cap = get_settings().retry_backoff_max
    return min(cap, max(backoff(attempt), asked or 0.0))


def run(job_id: str, delivery: int = 1) -> None:
    """Run the job, on the queue's `delivery`-th delivery of it (1 for the first): a job that
    keeps finding the database unavailable waits longer each time, up to RETRY_BACKOFF_MAX."""
    settings = get_settings()
    log = logger.bind(job_id=job_id)
    try:
        with database.transaction() as db:
            outcome, current = runs.claim(db, job_id, settings.job_lease, settings.job_max_attempts)
    except DATABASE_UNAVAILABLE as exc:
        log.warning("job waits for the database", error=str(exc), delivery=delivery)
        raise RetryLater(backoff(delivery), "the database is unavailable") from exc
    if outcome is Claim.BUSY:
        delay = min(settings.job_lease.total_seconds(), settings.retry_backoff_max)
        raise RetryLater(delay, "another worker is running it")
    if current is None:
        log.info("job skipped", reason=str(outcome))
        return
    log = log.bind(kind=current.kind, attempt=current.attempt)
    attributes: dict[str, str | int] = {"job.id": job_id, "job.kind": str(current.kind)}
    attributes["job.attempt"] = current.attempt
    with (
        tracer.start_as_current_span(
            f"job {current.kind}",
            context=tracing.parent(current.trace_context),  # the trace of the request
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,  # RetryLater is no error; _ended says how the run ended
            set_status_on_exception=False,
        ),
        keeper.keep(current),
    ):
        log.info("job started")
        _run(current, log)


def _run(current: Run, log: Any) -> None:
    settings = get_settings()
    try:
        result = WORK[current.kind](current, _reporter(current))
    except Stopped as exc:
        _stop(current, log, exc.cancelled)
        return
    except webhooks.Throttled as exc:
        delay, reason = min(exc.delay, settings.retry_backoff_max), str(exc)
        if _record(current, log, lambda db: runs.postpone(db, current, reason, delay)):
            _ended(Outcome.POSTPONED)
            raise RetryLater(delay, reason) from exc
        return
    except TRANSIENT_ERRORS as exc:
        error, summary = str(exc), _summary(exc)
        if current.attempt >= settings.job_max_attempts:
            gave_up = f"gave up after {current.attempt} attempts: "
            error, summary = gave_up + error, gave_up + summary
            if _record(current, log, lambda db: runs.fail(db, current, error, summary)):
                log.error("job failed", error=error, gave_up=True)
                _ended(Outcome.FAILED, error)
            return
        delay = retry_delay(current.attempt, getattr(exc, "retry_after", None))
        if _record(current, log, lambda db: runs.retrying(db, current, error, summary, delay)):
            log.warning("job retrying", error=error, delay=round(delay, 2))
            _ended(Outcome.RETRYING, error)
            raise RetryLater(delay, error) from exc
        return
    except Exception as exc:
        error, summary = f"{type(exc).__name__}: {exc}", _summary(exc)
        if _record(current, log, lambda db: runs.fail(db, current, error, summary)):
            log.exception("job failed")
            _ended(Outcome.FAILED, error)
        return
    if _record(current, log, lambda db: runs.succeed(db, current, result)):
        log.info("job succeeded")
        _ended(Outcome.SUCCEEDED)


def _ended(outcome: str, error: str | None = None) -> None:
    """Say on the run's span how it ended; an error if it failed, for now or for good."""
    span = trace.get_current_span()
    span.set_attribute("job.outcome", str(outcome))
    if error is not None:
        span.set_status(trace.StatusCode.ERROR, error)


def _record(current: Run, log: Any, write: Callable[[Connection], bool]) -> bool:
    """Record the run's outcome; if its job was cancelled after its last progress report, it
    stops as cancelled."""
    if record(current, write):
        return True
    if _status(current) is JobStatus.CANCELLED:
        _stop(current, log, cancelled=True)
    return False


def _stop(current: Run, log: Any, cancelled: bool) -> None:
    """End a run that is no longer current: its job was cancelled (its files go), or taken
    over by another run (which needs them)."""
    if not cancelled:
        log.warning("job taken over by another run; this one stops")
        _ended("taken over")
        return
    if current.kind is JobKind.PROCESS_FILE:
        files.Uploads(get_settings().upload_dir).delete(current.payload["key"])
    record(current, lambda db: runs.end_cancelled(db, current))
    log.info("job cancelled")
    _ended(Outcome.CANCELLED)


def _status(current: Run) -> JobStatus | None:
    try:
        with database.session() as db:
            return runs.status_of(db, current.job_id)
    except DATABASE_UNAVAILABLE:
        return None


def _summary(exc: BaseException) -> str:
    """What anyone holding the job's id may read of an error: the exception's own `summary` where
    it has one (its detail may quote a partner's answer or name hosts), the text of an error
    about the user's own upload, else no more than its kind."""
    summary = getattr(exc, "summary", None)
    if not isinstance(summary, str) or not summary:
        summary = (
            str(exc)
            if isinstance(exc, PUBLIC_ERRORS)
            else _KINDS.get(type(exc), "unexpected error")
        )
    return summary[:300]


PUBLIC_ERRORS = (files.UnreadableFile,)
_KINDS: dict[type[BaseException], str] = {
    kind: "the database was unavailable" for kind in DATABASE_UNAVAILABLE
} | {LookupError: "its signup no longer exists", files.StorageFull: "the disk was full"}


def _send_welcome_email(current: Run, progress: files.Progress) -> dict[str, Any]:
    signup = current.signup
    if signup is None:
        raise LookupError("the signup for this email no longer exists")
    message_id = mail.send_welcome(signup.name, signup.email, message_key=current.job_id)
    return {"to": signup.email, "message_id": message_id}


def _process_file(current: Run, progress: files.Progress) -> dict[str, Any]:
    uploads = files.Uploads(get_settings().upload_dir)
    return uploads.analyse(files.StoredFile(**current.payload), progress)


def _send_webhook(current: Run, progress: files.Progress) -> dict[str, Any]:
    return webhooks.deliver(current.job_id, current.payload)


WORK: dict[JobKind, Callable[[Run, files.Progress], dict[str, Any]]] = {
    JobKind.WELCOME_EMAIL: _send_welcome_email,
    JobKind.PROCESS_FILE: _process_file,
    JobKind.SIGNUP_WEBHOOK: _send_webhook,
}


def _reporter(current: Run) -> files.Progress:
    """Record progress at most once a second; stop the work if the run is no longer current."""
    last = 0.0

    def report(fraction: float) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < 1.0:
            return
        last = now
        try:
            with database.transaction() as db:
                if runs.renew(db, current, round(fraction, 3)):
                    return
                status = runs.status_of(db, current.job_id)
        except DATABASE_UNAVAILABLE:
            return  # progress can wait; the lease keeper goes on trying
        raise Stopped(status)

    return report
