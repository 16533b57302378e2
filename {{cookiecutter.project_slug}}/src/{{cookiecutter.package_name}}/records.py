"""Signups and job records: what was asked for, and how each background job is doing."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    ForeignKey,
    Index,
    String,
    Text,
    and_,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from .database import Base, UTCDateTime, session, utcnow


class JobKind(StrEnum):
    WELCOME_EMAIL = "welcome_email"
    PROCESS_FILE = "process_file"
    SIGNUP_WEBHOOK = "signup_webhook"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED)


class Claim(StrEnum):
    """What a worker learns when it asks to run a job."""

    CLAIMED = "claimed"  # run it now
    BUSY = "busy"  # another worker is running it: check back later
    DONE = "done"  # finished already (a redelivered message): nothing to do
    MISSING = "missing"  # no such record (cleaned up, or never written)


class Signup(Base):
    __tablename__ = "signups"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_finished_at", "status", "finished_at"),
        Index("ix_jobs_status_due_at", "status", "due_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    signup_id: Mapped[int | None] = mapped_column(ForeignKey("signups.id", ondelete="CASCADE"))
    attempts: Mapped[int] = mapped_column(default=0)
    progress: Mapped[float] = mapped_column(default=0.0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When it should start: when it was recorded or last published, or when its retry is due.
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # How often it was published again because its message seemed lost.
    publications: Mapped[int] = mapped_column(default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "attempts": self.attempts,
            "progress": self.progress,
            "result": self.result,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


def create_signup_jobs(email: str, name: str, notify: bool) -> list[Job]:
    """Record a signup, its welcome email and, if `notify`, its webhook, in one transaction.

    The webhook's payload is the event it announces, fixed now so every attempt sends the same.
    """
    with session() as db:
        signup = Signup(email=email, name=name, created_at=utcnow())
        db.add(signup)
        db.flush()
        jobs = [Job(id=_new_id(), kind=JobKind.WELCOME_EMAIL, signup_id=signup.id, payload={})]
        if notify:
            event = {
                "type": "signup.created",
                "timestamp": signup.created_at.isoformat(),
                "data": {"id": signup.id, "email": email, "name": name},
            }
            jobs.append(
                Job(id=_new_id(), kind=JobKind.SIGNUP_WEBHOOK, signup_id=signup.id, payload=event)
            )
        db.add_all(jobs)
    return jobs


def create_job(kind: JobKind, payload: dict[str, Any]) -> Job:
    with session() as db:
        job = Job(id=_new_id(), kind=kind, payload=payload)
        db.add(job)
    return job


def get_job(job_id: str) -> Job | None:
    with session() as db:
        return db.get(Job, job_id)


def discard(job_id: str) -> None:
    """Delete a job that never reached the queue, and the signup it was made for."""
    with session() as db:
        job = db.get(Job, job_id)
        if job is not None:
            db.delete(job)
            if job.signup_id is not None:
                db.execute(delete(Signup).where(Signup.id == job.signup_id))


@dataclass(frozen=True)
class Work:
    """A claimed job and what its work needs, read in the claim's own transaction."""

    job: Job
    signup: Signup | None


def claim(job_id: str, lease: timedelta, max_attempts: int) -> Claim:
    return claim_work(job_id, lease, max_attempts)[0]


def claim_work(job_id: str, lease: timedelta, max_attempts: int) -> tuple[Claim, Work | None]:
    """Atomically mark a job running for this worker, unless someone else runs or ran it.

    A job marked running whose worker stopped reporting for `lease` is taken over: that worker
    died. One that has used up `max_attempts` that way is failed instead of run again. A claimed
    job comes back with its signup, from one transaction: the UPDATE returns the row it claimed.
    """
    now = utcnow()
    claimable = or_(
        Job.status.in_([JobStatus.QUEUED, JobStatus.RETRYING]),
        (Job.status == JobStatus.RUNNING) & (Job.heartbeat_at < now - lease),
    )
    with session() as db:
        claimed = db.scalars(
            update(Job)
            .where(Job.id == job_id, claimable, Job.attempts < max_attempts)
            .values(
                status=JobStatus.RUNNING,
                attempts=Job.attempts + 1,
                started_at=now,
                heartbeat_at=now,
                error=None,
            )
            .returning(Job)
        ).one_or_none()
        if claimed is not None:
            signup = db.get(Signup, claimed.signup_id) if claimed.signup_id is not None else None
            return Claim.CLAIMED, Work(claimed, signup)
        job = db.get(Job, job_id)
        if job is None:
            return Claim.MISSING, None
        if job.status in FINISHED:
            return Claim.DONE, None
        if job.attempts < max_attempts:
            return Claim.BUSY, None
        gave_up = db.execute(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(
                status=JobStatus.FAILED,
                error=f"worker lost during each of {job.attempts} attempts",
                finished_at=now,
            )
        )
        return (Claim.DONE if gave_up.rowcount else Claim.BUSY), None  # type: ignore[attr-defined]


def heartbeat(job_id: str, progress: float) -> None:
    _set(job_id, progress=progress, heartbeat_at=utcnow())


def succeed(job_id: str, result: dict[str, Any]) -> None:
    _set(job_id, status=JobStatus.SUCCEEDED, result=result, progress=1.0, finished_at=utcnow())


def retrying(job_id: str, error: str, delay: float) -> None:
    """Record a failed attempt whose retry is due in `delay` seconds."""
    due_at = utcnow() + timedelta(seconds=delay)
    _set(job_id, status=JobStatus.RETRYING, error=error, due_at=due_at)


def postpone(job_id: str, reason: str, delay: float) -> None:
    """Give back a claimed job that did not get to run, due again in `delay` seconds: the claim's
    attempt does not count."""
    due_at = utcnow() + timedelta(seconds=delay)
    _set(job_id, status=JobStatus.RETRYING, error=reason, attempts=Job.attempts - 1, due_at=due_at)


def fail(job_id: str, error: str) -> None:
    _set(job_id, status=JobStatus.FAILED, error=error, finished_at=utcnow())


def reopen(job_id: str) -> Job | None:
    """Mark a failed job queued again, with a fresh count of attempts; None if it is not failed.

    The error of the failed run stays until the next run starts. Returns the record as it was,
    for `restore` should the queue not take the job.
    """
    with session() as db:
        job = db.get(Job, job_id)
        if job is None or job.status != JobStatus.FAILED:
            return None
        db.expunge(job)
        reopened = db.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.FAILED)
            .values(status=JobStatus.QUEUED, attempts=0, progress=0.0, finished_at=None)
            .execution_options(synchronize_session=False)
        )
        return job if reopened.rowcount == 1 else None  # type: ignore[attr-defined]


def restore(job: Job) -> None:
    """Put back a job that `reopen` queued, as it was, if no worker has started it."""
    with session() as db:
        db.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.QUEUED, Job.attempts == 0)
            .values(
                status=job.status,
                attempts=job.attempts,
                progress=job.progress,
                finished_at=job.finished_at,
            )
        )


def finished_before(cutoff: datetime, limit: int) -> Sequence[Job]:
    """The oldest finished jobs that ended before `cutoff`, at most `limit` of them."""
    with session() as db:
        return db.scalars(
            select(Job)
            .where(Job.status.in_(FINISHED), Job.finished_at < cutoff)
            .order_by(Job.finished_at)
            .limit(limit)
        ).all()


def stuck_jobs(after: timedelta, max_publications: int, limit: int) -> Sequence[Job]:
    """The jobs that should have started long ago and have not, longest overdue first.

    That is a job queued or retrying `after` past its due time, or one marked running whose
    worker has not reported for `after`. Each time it is published again the wait grows by
    `after`, so a slow backlog is not flooded with copies of its messages.
    """
    with session() as db:
        return db.scalars(
            select(Job)
            .where(_stuck(utcnow(), after, max_publications))
            .order_by(Job.due_at)
            .limit(limit)
        ).all()


def take_stuck(job_id: str, after: timedelta, max_publications: int) -> bool:
    """Make a stuck job due now, if it still is stuck: of two reconcilers, one gets it."""
    now = utcnow()
    with session() as db:
        taken = db.execute(
            update(Job)
            .where(Job.id == job_id, _stuck(now, after, max_publications))
            .values(due_at=now)
        )
        return taken.rowcount == 1  # type: ignore[attr-defined, no-any-return]


def published_again(job_id: str) -> None:
    with session() as db:
        db.execute(update(Job).where(Job.id == job_id).values(publications=Job.publications + 1))


def fail_stuck(job_id: str, after: timedelta, max_publications: int, error: str) -> bool:
    """Fail a job published again `max_publications` times that still has not started."""
    now = utcnow()
    with session() as db:
        failed = db.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.publications >= max_publications,
                _stuck(now, after, max_publications),
            )
            .values(status=JobStatus.FAILED, error=error, finished_at=now)
        )
        return failed.rowcount == 1  # type: ignore[attr-defined, no-any-return]


def _stuck(now: datetime, after: timedelta, max_publications: int) -> ColumnElement[bool]:
    not_started = or_(
        Job.status.in_([JobStatus.QUEUED, JobStatus.RETRYING]),
        (Job.status == JobStatus.RUNNING) & (Job.heartbeat_at < now - after),
    )
    # Waited `after` past its due time once for each publication so far, and once more.
    overdue = [
        (Job.publications == times) & (Job.due_at < now - after * (times + 1))
        for times in range(max_publications)
    ]
    last = after * (max_publications + 1)
    overdue.append((Job.publications >= max_publications) & (Job.due_at < now - last))
    return and_(not_started, or_(*overdue))


def republications() -> int:
    """How often jobs were published again, over the job records still kept."""
    with session() as db:
        return db.scalar(select(func.coalesce(func.sum(Job.publications), 0))) or 0


def upload_keys() -> set[str]:
    """The key of every upload a job record names (one scan, however many there are)."""
    with session() as db:
        keys = db.scalars(
            select(Job.payload["key"].as_string()).where(Job.kind == JobKind.PROCESS_FILE)
        )
        return set(keys)


def delete_jobs(job_ids: Sequence[str]) -> int:
    with session() as db:
        return db.execute(delete(Job).where(Job.id.in_(job_ids))).rowcount  # type: ignore[attr-defined, no-any-return]


def _set(job_id: str, **values: Any) -> None:
    with session() as db:
        db.execute(update(Job).where(Job.id == job_id).values(**values))


def _new_id() -> str:
    return str(uuid.uuid4())
