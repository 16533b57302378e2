"""A job's runs: the claim that makes one run the job's current one, and that run's writes.

A claim hands its run a fence, a number that grows with every claim of the job. Every write of
the run names that fence, and the database refuses a write from a run that is no longer current
(its job was taken over, retried or cancelled meanwhile): it changes nothing, and the caller
learns so. Each run leaves a row in the job's attempt history, saying how it ended.
"""

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, Table, bindparam, insert, or_, select, update

from .database import Db, utcnow
from .models import FINISHED, WAITING, Attempt, Job, JobKind, JobStatus, Outcome, Signup


class Claim(StrEnum):
    """What a worker learns when it asks to run a job."""

    CLAIMED = "claimed"  # run it now
    BUSY = "busy"  # another worker is running it: check back later
    DONE = "done"  # finished already (a redelivered message), or cancelled: nothing to do
    MISSING = "missing"  # no such record (cleaned up, or never written)


class Addressee(NamedTuple):
    """The signup a job was made for, as its work needs it."""

    name: str
    email: str


@dataclass(frozen=True, eq=False)  # each run is itself, whatever its values
class Run:
    """A claimed job: what its work needs, read in the claim's own transaction, and the fence
    that its writes name."""

    job_id: str
    kind: JobKind
    fence: int
    attempt: int
    payload: dict[str, Any]
    signup: Addressee | None
    trace_context: dict[str, str] | None


# The statements of every run, built once: building one costs more than running it. They name the
# tables rather than the mapped classes, so they run as plain Core in a session too.
_jobs, _attempts = cast(Table, Job.__table__), cast(Table, Attempt.__table__)
_signups = cast(Table, Signup.__table__)


def _claimable(stale_before: Any) -> ColumnElement[bool]:
    """Waiting, or running under a lease last renewed before `stale_before`."""
    running = _jobs.c.status == JobStatus.RUNNING
    return or_(_jobs.c.status.in_(WAITING), running & (_jobs.c.heartbeat_at < stale_before))


_NOW = bindparam("now", type_=_jobs.c.started_at.type)
_CLAIM = (
    update(_jobs)
    .where(
        _jobs.c.id == bindparam("job_id"),
        _claimable(bindparam("stale_before", type_=_jobs.c.heartbeat_at.type)),
        _jobs.c.attempts < bindparam("max_attempts"),
    )
    .values(
        status=JobStatus.RUNNING,
        attempts=_jobs.c.attempts + 1,
        fence=_jobs.c.fence + 1,
        started_at=_NOW,
        heartbeat_at=_NOW,
        error=None,
        error_summary=None,
    )
    .returning(
        *(_jobs.c.kind, _jobs.c.fence, _jobs.c.attempts, _jobs.c.payload),
        *(_jobs.c.signup_id, _jobs.c.trace_context),
    )
)
_NEW_ATTEMPT = insert(_attempts)
_ADDRESSEE = select(_signups.c.name, _signups.c.email).where(_signups.c.id == bindparam("id"))
# The SET clauses of these two are the columns named by the parameters they run with, beside the
# run's own (`run_job`, `run_fence`).
_WRITE = update(_jobs).where(
    _jobs.c.id == bindparam("run_job"),
    _jobs.c.fence == bindparam("run_fence"),
    _jobs.c.status == JobStatus.RUNNING,
)
_END_ATTEMPT = update(_attempts).where(
    _attempts.c.job_id == bindparam("run_job"), _attempts.c.fence == bindparam("run_fence")
)


def claim(db: Db, job_id: str, lease: timedelta, max_attempts: int) -> tuple[Claim, Run | None]:
    """Atomically make this the job's current run, unless another runs or ran it.

    A job marked running whose run has not renewed its lease for `lease` is taken over: that
    worker died or hung, and its attempt is recorded as lost. One that has used up
    `max_attempts` that way is failed instead of run again.
    """
    now = utcnow()
    asked = {"job_id": job_id, "now": now, "stale_before": now - lease}
    claimed = db.execute(_CLAIM, asked | {"max_attempts": max_attempts}).one_or_none()
    if claimed is not None:
        kind, fence, attempt, payload, signup_id, trace_context = claimed
        if fence > 1:  # an earlier run may have been taken over (the first has none before it)
            _lose_open_attempts(db, job_id, now)
        attempt_row = {"job_id": job_id, "fence": fence, "number": attempt, "started_at": now}
        db.execute(_NEW_ATTEMPT, attempt_row | {"worker": worker_name()})
        signup = None
        if signup_id is not None:
            found_signup = db.execute(_ADDRESSEE, {"id": signup_id}).one_or_none()
            signup = None if found_signup is None else Addressee(*found_signup)
        return Claim.CLAIMED, Run(
            job_id, JobKind(kind), fence, attempt, payload, signup, trace_context
        )
    found = db.execute(select(Job.status, Job.attempts).where(Job.id == job_id)).one_or_none()
    if found is None:
        return Claim.MISSING, None
    status, attempts = found
    if status in FINISHED:
        return Claim.DONE, None
    if attempts < max_attempts:
        return Claim.BUSY, None
    error = f"worker lost during each of {attempts} attempts"
    gave_up = db.execute(
        update(_jobs)
        .where(_jobs.c.id == job_id, _claimable(now - lease))
        .values(status=JobStatus.FAILED, error=error, error_summary=error, finished_at=now)
    )
    if gave_up.rowcount:  # type: ignore[attr-defined]
        _lose_open_attempts(db, job_id, now)
        return Claim.DONE, None
    return Claim.BUSY, None


def renew(db: Db, run: Run, progress: float | None = None) -> bool:
    """Renew the run's lease (and record its progress); False if it is no longer current."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    return _write(db, run, values)


def succeed(db: Db, run: Run, result: dict[str, Any]) -> bool:
    now = utcnow()
    done = {"status": JobStatus.SUCCEEDED, "result": result, "progress": 1.0, "finished_at": now}
    return _write(db, run, done, Outcome.SUCCEEDED)


def retrying(db: Db, run: Run, error: str, summary: str, delay: float) -> bool:
    """Record a failed attempt whose retry is due in `delay` seconds."""
    due_at = utcnow() + timedelta(seconds=delay)
    values = {"status": JobStatus.RETRYING, "error": error, "error_summary": summary}
    return _write(db, run, values | {"due_at": due_at}, Outcome.RETRYING, error, delay)


def postpone(db: Db, run: Run, reason: str, delay: float) -> bool:
    """Give back a claimed job that did not get to run, due again in `delay` seconds: the claim's
    attempt does not count."""
    due_at = utcnow() + timedelta(seconds=delay)
    values: dict[str, Any] = {"status": JobStatus.RETRYING, "error": reason, "due_at": due_at}
    # The write is fenced: no claim came since this run's, whose attempt is given back.
    values |= {"error_summary": reason, "attempts": run.attempt - 1}
    return _write(db, run, values, Outcome.POSTPONED, reason, delay)


def fail(db: Db, run: Run, error: str, summary: str) -> bool:
    values = {"status": JobStatus.FAILED, "error": error, "error_summary": summary}
    return _write(db, run, values | {"finished_at": utcnow()}, Outcome.FAILED, error)


def status_of(db: Db, job_id: str) -> JobStatus | None:
    status = db.scalar(select(Job.status).where(Job.id == job_id))
    return None if status is None else JobStatus(status)


def end_cancelled(db: Db, run: Run) -> bool:
    """Close the attempt of a run that stopped because its job was cancelled."""
    _end_attempt(db, run, Outcome.CANCELLED, "cancelled while it ran")
    return True


def worker_name() -> str:
    """This process, as the attempt history names it (computed each time: workers fork)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _write(
    db: Db,
    run: Run,
    values: dict[str, Any],
    outcome: Outcome | None = None,
    error: str | None = None,
    delay: float | None = None,
) -> bool:
    """Change the job for `run`, only while it is the job's current run; end its attempt."""
    written = db.execute(_WRITE, {"run_job": run.job_id, "run_fence": run.fence, **values})
    current = bool(written.rowcount)  # type: ignore[attr-defined]
    if current and outcome is not None:
        _end_attempt(db, run, outcome, error, delay)
    return current


def _end_attempt(
    db: Db, run: Run, outcome: Outcome, error: str | None, delay: float | None = None
) -> None:
    ended = {"ended_at": utcnow(), "outcome": outcome, "error": error, "delay": delay}
    db.execute(_END_ATTEMPT, {"run_job": run.job_id, "run_fence": run.fence, **ended})


def _lose_open_attempts(db: Db, job_id: str, now: datetime) -> None:
    """End the attempts of runs that were taken over: their workers stopped reporting."""
    db.execute(
        update(Attempt)
        .where(Attempt.job_id == job_id, Attempt.ended_at.is_(None))
        .values(ended_at=now, outcome=Outcome.LOST, error="its worker stopped reporting")
    )
