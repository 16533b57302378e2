"""Figures about the jobs, read from their records: for the dashboard and the metrics.

Every figure comes from the database when it is asked for, so every web process gives the same
answer, however many there are and whichever worker ran the jobs. None of them reads more rows
as the records grow: each is one range of an index (models.py says which serves which), a bounded
one (the last hour, the latest jobs) or, for the counts, a few dozen rows of `job_counts`.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import FINISHED, REPUBLISHED, Job, JobCount, JobKind, JobStatus


def counts(db: Session) -> dict[tuple[str, str], int]:
    """The number of jobs of each (kind, status), zero included."""
    counted: dict[tuple[str, str], int] = {
        (kind, status): 0 for kind in JobKind for status in JobStatus
    }
    rows = db.execute(
        select(JobCount.kind, JobCount.status, func.sum(JobCount.change)).group_by(
            JobCount.kind, JobCount.status
        )
    )
    for kind, status, number in rows:
        counted[(kind, status)] = int(number)
    return counted


def recent(db: Session, kind: str | None, status: str | None, limit: int) -> Sequence[Job]:
    """The latest jobs, newest first, of one kind or status if given.

    Filtered, it reads the latest `limit` of each (kind, status) chosen, each from its own range
    of one index, and keeps the newest: a rare pair costs no more than a common one.
    """
    query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if kind is None and status is None:
        return db.scalars(query).all()
    found = [
        job
        for one_kind in ([kind] if kind else list(JobKind))
        for one_status in ([status] if status else list(JobStatus))
        for job in db.scalars(query.where(Job.kind == one_kind, Job.status == one_status))
    ]
    found.sort(key=lambda job: job.id)
    found.sort(key=lambda job: job.created_at, reverse=True)
    return found[:limit]


def last_finished(db: Session) -> dict[str, datetime]:
    """When a job of each kind last finished, for the kinds that have finished one."""
    found: dict[str, datetime] = {}
    for kind in JobKind:
        finished_at = db.scalar(
            select(Job.finished_at)
            .where(Job.kind == kind, Job.finished_at.is_not(None), Job.status.in_(FINISHED))
            .order_by(Job.finished_at.desc())
            .limit(1)
        )
        if finished_at is not None:
            found[kind] = finished_at
    return found


def oldest_queued(db: Session) -> dict[str, datetime]:
    """When the oldest job of each kind that still waits for a worker was created."""
    rows = db.execute(
        select(Job.kind, func.min(Job.created_at))
        .where(Job.status == JobStatus.QUEUED)
        .group_by(Job.kind)
    )
    return {kind: created_at for kind, created_at in rows if created_at is not None}


def durations(db: Session, limit: int) -> dict[str, list[float]]:
    """Seconds from start to end of the last run of each kind's latest `limit` finished jobs."""
    found: dict[str, list[float]] = {}
    for kind in JobKind:
        rows = db.execute(
            select(Job.started_at, Job.finished_at)
            .where(
                Job.kind == kind,
                Job.finished_at.is_not(None),
                Job.status.in_(FINISHED),
                Job.started_at.is_not(None),
            )
            .order_by(Job.finished_at.desc())
            .limit(limit)
        )
        found[kind] = [
            (finished - started).total_seconds()
            for started, finished in rows
            if started and finished
        ]
    return found


def republications(db: Session) -> int:
    """How often jobs were published again, over the job records still kept (read from an index
    of the few jobs published again)."""
    total = select(func.coalesce(func.sum(Job.publications), 0)).where(REPUBLISHED)
    return db.scalar(total) or 0


def per_minute(db: Session, now: datetime, minutes: int) -> dict[str, dict[str, list[int]]]:
    """Jobs of each kind that succeeded and that failed in each of the last `minutes` minutes,
    oldest minute first."""
    since = now - timedelta(minutes=minutes)
    counted: dict[str, dict[str, list[int]]] = {
        kind: {status: [0] * minutes for status in _ENDS} for kind in JobKind
    }
    rows = db.execute(
        select(Job.kind, Job.status, Job.finished_at).where(
            Job.status.in_(_ENDS), Job.finished_at > since
        )
    )
    for kind, status, finished_at in rows:
        minute = int((finished_at - since).total_seconds() // 60) if finished_at else -1
        if kind in counted and 0 <= minute < minutes:
            counted[kind][status][minute] += 1
    return counted


_ENDS = (JobStatus.SUCCEEDED, JobStatus.FAILED)
