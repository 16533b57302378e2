"""Figures about the jobs, read from their records: for the dashboard and the metrics.

Every figure comes from the database when it is asked for, so every web process gives the same
answer, however many there are and whichever worker ran the jobs.
"""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select

from .database import session
from .records import FINISHED, Job, JobKind, JobStatus


def counts() -> dict[tuple[str, str], int]:
    """The number of jobs of each (kind, status), zero included."""
    counted: dict[tuple[str, str], int] = {
        (kind, status): 0 for kind in JobKind for status in JobStatus
    }
    with session() as db:
        rows = db.execute(select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status))
        for kind, status, number in rows:
            counted[(kind, status)] = number
    return counted


def recent(kind: str | None, status: str | None, limit: int) -> Sequence[Job]:
    """The latest jobs, newest first, of one kind or status if given."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if status is not None:
        query = query.where(Job.status == status)
    with session() as db:
        return db.scalars(query).all()


def last_finished() -> dict[str, datetime]:
    """When a job of each kind last finished, for the kinds that have finished one."""
    with session() as db:
        rows = db.execute(
            select(Job.kind, func.max(Job.finished_at))
            .where(Job.status.in_(FINISHED))
            .group_by(Job.kind)
        )
        return {kind: finished_at for kind, finished_at in rows if finished_at is not None}


def oldest_queued() -> dict[str, datetime]:
    """When the oldest job of each kind that still waits for a worker was created."""
    with session() as db:
        rows = db.execute(
            select(Job.kind, func.min(Job.created_at))
            .where(Job.status == JobStatus.QUEUED)
            .group_by(Job.kind)
        )
        return {kind: created_at for kind, created_at in rows if created_at is not None}


def durations(limit: int) -> dict[str, list[float]]:
    """Seconds from start to end of the last run of each kind's latest `limit` finished jobs."""
    found: dict[str, list[float]] = {}
    with session() as db:
        for kind in JobKind:
            rows = db.execute(
                select(Job.started_at, Job.finished_at)
                .where(Job.kind == kind, Job.status.in_(FINISHED), Job.started_at.is_not(None))
                .order_by(Job.finished_at.desc())
                .limit(limit)
            )
            found[kind] = [
                (finished - started).total_seconds()
                for started, finished in rows
                if started and finished
            ]
    return found
