"""Run a recorded job once: the same for every queue, free of queue details.

The queue layer delivers a job id at least once; `run` makes each delivery safe. It claims the
record (so one worker runs a job at a time), does the work, records the outcome, and asks the
queue to try again later, with exponential backoff and jitter, when a failure may pass. A
transient error with a `retry_after` (seconds the other side asked for) waits at least that long,
up to RETRY_BACKOFF_MAX; work that was held back before it started (`webhooks.Throttled`) comes
back after the delay it names, and that claim does not count as an attempt.
"""

import random
import time
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy.exc import OperationalError

from . import files, mail, records, webhooks
from .records import Claim, Job, JobKind, Work
from .settings import get_settings

logger = structlog.get_logger(__name__)

TRANSIENT_ERRORS = (mail.TransientMailError, webhooks.DeliveryError, OperationalError)


class RetryLater(Exception):
    """Deliver this job again after `delay` seconds."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(f"retry in {delay:.1f}s: {reason}")
        self.delay = delay


class BrokerUnavailable(Exception):
    """The job could not be handed to the broker."""


def record_upload(stored: files.StoredFile) -> Job:
    """Record the job that will process a stored upload; if that fails, the file goes too."""
    try:
        return records.create_job(JobKind.PROCESS_FILE, stored.to_payload())
    except BaseException:
        files.delete(stored.key)
        raise


def record_signup(email: str, name: str) -> list[Job]:
    """Record a signup with its jobs: the welcome email, and the webhook if WEBHOOK_URL is set."""
    return records.create_signup_jobs(email, name, notify=bool(get_settings().webhook_url))


def withdraw(*recorded: Job) -> None:
    """Take back jobs that never reached the queue: their records, signup and upload."""
    for job in recorded:
        records.discard(job.id)
        if job.kind == JobKind.PROCESS_FILE:
            files.delete(job.payload["key"])


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1, 2, ...): half fixed, half random."""
    settings = get_settings()
    ceiling = min(settings.retry_backoff_max, settings.retry_backoff * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_delay(attempt: int, asked: float | None = None) -> float:
    """The backoff after attempt `attempt`, or longer if the other side `asked`, within the cap."""
    cap = get_settings().retry_backoff_max
    return min(cap, max(backoff(attempt), asked or 0.0))


def run(job_id: str) -> None:
    settings = get_settings()
    log = logger.bind(job_id=job_id)
    outcome, work = records.claim_work(job_id, settings.job_lease, settings.job_max_attempts)
    if outcome is Claim.BUSY:
        raise RetryLater(settings.job_lease.total_seconds(), "another worker is running it")
    if work is None:
        log.info("job skipped", reason=str(outcome))
        return
    job = work.job
    log = log.bind(kind=job.kind, attempt=job.attempts)
    log.info("job started")
    try:
        result = WORK[JobKind(job.kind)](work, _reporter(job_id))
    except webhooks.Throttled as exc:
        delay = min(exc.delay, settings.retry_backoff_max)
        records.postpone(job_id, str(exc), delay)
        raise RetryLater(delay, str(exc)) from exc
    except TRANSIENT_ERRORS as exc:
        if job.attempts >= settings.job_max_attempts:
            records.fail(job_id, f"gave up after {job.attempts} attempts: {exc}")
            log.error("job failed", error=str(exc), gave_up=True)
            return
        delay = retry_delay(job.attempts, getattr(exc, "retry_after", None))
        records.retrying(job_id, str(exc), delay)
        log.warning("job retrying", error=str(exc), delay=round(delay, 2))
        raise RetryLater(delay, str(exc)) from exc
    except Exception as exc:
        records.fail(job_id, f"{type(exc).__name__}: {exc}")
        log.exception("job failed")
        return
    records.succeed(job_id, result)
    log.info("job succeeded")


def _send_welcome_email(work: Work, progress: files.Progress) -> dict[str, Any]:
    signup = work.signup
    if signup is None:
        raise LookupError("the signup for this email no longer exists")
    message_id = mail.send_welcome(signup.name, signup.email, message_key=work.job.id)
    return {"to": signup.email, "message_id": message_id}


def _process_file(work: Work, progress: files.Progress) -> dict[str, Any]:
    return files.analyse(files.StoredFile(**work.job.payload), progress)


def _send_webhook(work: Work, progress: files.Progress) -> dict[str, Any]:
    return webhooks.deliver(work.job.id, work.job.payload)


WORK: dict[JobKind, Callable[[Work, files.Progress], dict[str, Any]]] = {
    JobKind.WELCOME_EMAIL: _send_welcome_email,
    JobKind.PROCESS_FILE: _process_file,
    JobKind.SIGNUP_WEBHOOK: _send_webhook,
}


def _reporter(job_id: str) -> files.Progress:
    """Record progress, which also tells other workers this one is alive, at most once a second."""
    last = 0.0

    def report(fraction: float) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 1.0:
            last = now
            records.heartbeat(job_id, round(fraction, 3))

    return report
