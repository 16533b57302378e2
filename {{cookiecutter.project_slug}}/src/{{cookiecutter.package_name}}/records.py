"""Job records as requests change them: recorded with their signup, read, withdrawn when the
queue refuses them, retried by hand, cancelled. A worker's changes are in `runs`."""

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from .database import Db, utcnow
from .models import WAITING, Attempt, Job, JobKind, JobStatus, Outcome, Signup

# A signup's statements, built once (building one costs more than running it), on the tables so
# that they run as plain Core in a session too.
_NEW_SIGNUP = insert(cast(Table, Signup.__table__)).returning(Signup.__table__.c.id)
_NEW_JOBS = insert(cast(Table, Job.__table__))


def new_id() -> str:
    return str(uuid.uuid4())


def create_signup_jobs(
    db: Db,
    email: str,
    name: str,
    notify: bool,
    trace_context: dict[str, str] | None = None,
) -> list[Job]:
    """Record a signup, its welcome email and, if `notify`, its webhook.

    The webhook's payload is the event it announces, fixed now so every attempt sends the same.
    """
    now = utcnow()
    signup = {"email": email, "name": name, "created_at": now}
    signup_id = db.execute(_NEW_SIGNUP, signup).scalar_one()
    jobs = [_new_job(JobKind.WELCOME_EMAIL, {}, now, trace_context, signup_id)]
    if notify:
        event = {
            "type": "signup.created",
            "timestamp": now.isoformat(),
            "data": {"id": signup_id, "email": email, "name": name},
        }
        jobs.append(_new_job(JobKind.SIGNUP_WEBHOOK, event, now, trace_context, signup_id))
    _insert(db, jobs)
    return jobs


def create_job(
    db: Db, kind: JobKind, payload: dict[str, Any], trace_context: dict[str, str] | None = None
) -> Job:
    job = _new_job(kind, payload, utcnow(), trace_context)
    _insert(db, [job])
    return job


def get_job(db: Session, job_id: str) -> Job | None:
    return db.get(Job, job_id)


def attempts_of(db: Session, job_id: str) -> list[Attempt]:
    """The job's attempts, oldest first."""
    query = select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.fence)
    return list(db.scalars(query))


def discard(db: Session, job_id: str) -> None:
    """Delete a job that never reached the queue, and the signup it was made for."""
    signup_id = db.execute(
        delete(Job).where(Job.id == job_id).returning(Job.signup_id)
    ).scalar_one_or_none()
    if signup_id is not None:
        db.execute(delete(Signup).where(Signup.id == signup_id))


def cancel(db: Session, job_id: str) -> tuple[JobStatus | None, Job | None]:
    """Cancel a job that has not started, or a file job that runs (it stops at its next progress
    report). The status it was cancelled in (None if it was not), and the job as it is now (None
    if there is none)."""
    now = utcnow()
    for status in (*WAITING, JobStatus.RUNNING):
        kinds = [JobKind.PROCESS_FILE] if status == JobStatus.RUNNING else list(JobKind)
        done = db.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == status, Job.kind.in_(kinds))
            .values(status=JobStatus.CANCELLED, finished_at=now, error=None, error_summary=None)
        )
        if done.rowcount:  # type: ignore[attr-defined]
            break
    else:
        return None, db.get(Job, job_id)
    if status == JobStatus.RUNNING:  # its run's attempt ends now, whenever its worker stops
        db.execute(
            update(Attempt)
            .where(Attempt.job_id == job_id, Attempt.ended_at.is_(None))
            .values(ended_at=now, outcome=Outcome.CANCELLED, error="cancelled while it ran")
        )
    return status, db.get(Job, job_id, populate_existing=True)


def cancellable(job: Job) -> bool:
    """Whether `cancel` would cancel the job as it is: one waiting, or a file job that runs."""
    running_file = job.status == JobStatus.RUNNING and job.kind == JobKind.PROCESS_FILE
    return job.status in WAITING or running_file


def reopen(db: Session, job_id: str) -> Job | None:
    """Queue a failed job again with a fresh life: no attempts, due now, never republished.

    The error of the failed run stays until the next run starts. Returns the record as it was,
    for `restore` should the queue not take the job; None if it is not failed.
    """
    job = db.get(Job, job_id)
    if job is None or job.status != JobStatus.FAILED:
        return None
    db.expunge(job)
    reopened = db.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.FAILED)
        .values(
            status=JobStatus.QUEUED,
            attempts=0,
            progress=0.0,
            finished_at=None,
            due_at=utcnow(),
            publications=0,
        )
        .execution_options(synchronize_session=False)
    )
    return job if reopened.rowcount == 1 else None  # type: ignore[attr-defined]


def restore(db: Session, job: Job) -> None:
    """Put back a job that `reopen` queued, as it was, if no run has claimed it since."""
    db.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.QUEUED, Job.fence == job.fence)
        .values(
            status=job.status,
            attempts=job.attempts,
            progress=job.progress,
            finished_at=job.finished_at,
            due_at=job.due_at,
            publications=job.publications,
        )
    )


def _new_job(
    kind: JobKind,
    payload: dict[str, Any],
    now: datetime,
    trace_context: dict[str, str] | None,
    signup_id: int | None = None,
) -> Job:
    return Job(
        id=new_id(),
        kind=kind,
        status=JobStatus.QUEUED,
        payload=payload,
        signup_id=signup_id,
        attempts=0,
        fence=0,
        progress=0.0,
        created_at=now,
        due_at=now,
        publications=0,
        trace_context=trace_context,
    )


_COLUMNS = (
    *("id", "kind", "status", "payload", "signup_id", "attempts", "fence", "progress"),
    *("created_at", "due_at", "publications", "trace_context"),
)


def _insert(db: Db, jobs: list[Job]) -> None:
    """Insert new jobs in one statement, without the ORM's unit of work."""
    db.execute(_NEW_JOBS, [{name: getattr(job, name) for name in _COLUMNS} for job in jobs])
