"""The scheduled work's queries: jobs that seem stuck, finished jobs past their retention, expired
idempotency keys, the uploads that job records still name, and the sums of the job counts.

Each reads one range of an index (models.py says which), so a run costs the same however many
job records are kept."""

from collections import Counter
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from .database import utcnow
from .models import FINISHED, UPLOAD_KEY, WAITING, IdempotencyKey, Job, JobCount, JobStatus


def stuck_jobs(db: Session, after: timedelta, max_publications: int, limit: int) -> Sequence[Job]:
    """The jobs that should have started long ago and have not, longest overdue first.

    That is a job queued or retrying `after` past its due time, or one marked running whose
    run has not renewed its lease for `after`. Each time it is published again the wait grows by
    `after`, so a slow backlog is not flooded with copies of its messages.
    """
    query = select(Job).where(_stuck(utcnow(), after, max_publications))
    return db.scalars(query.order_by(Job.due_at).limit(limit)).all()


def take_stuck(db: Session, job_id: str, after: timedelta, max_publications: int) -> bool:
    """Make a stuck job due now, if it still is stuck: of two reconcilers, one gets it."""
    now = utcnow()
    taken = db.execute(
        update(Job).where(Job.id == job_id, _stuck(now, after, max_publications)).values(due_at=now)
    )
    return bool(taken.rowcount)  # type: ignore[attr-defined]


def published_again(db: Session, job_id: str) -> None:
    db.execute(update(Job).where(Job.id == job_id).values(publications=Job.publications + 1))


def fail_stuck(
    db: Session, job_id: str, after: timedelta, max_publications: int, error: str
) -> bool:
    """Fail a job published again `max_publications` times that still has not started."""
    now = utcnow()
    failed = db.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.publications >= max_publications,
            _stuck(now, after, max_publications),
        )
        .values(status=JobStatus.FAILED, error=error, error_summary=error, finished_at=now)
    )
    return bool(failed.rowcount)  # type: ignore[attr-defined]


def _stuck(now: datetime, after: timedelta, max_publications: int) -> ColumnElement[bool]:
    not_started = or_(
        Job.status.in_(WAITING),
        (Job.status == JobStatus.RUNNING) & (Job.heartbeat_at < now - after),
    )
    # Waited `after` past its due time once for each publication so far, and once more.
    overdue = [
        (Job.publications == times) & (Job.due_at < now - after * (times + 1))
        for times in range(max_publications)
    ]
    last = after * (max_publications + 1)
    overdue.append((Job.publications >= max_publications) & (Job.due_at < now - last))
    # Implied by the above, and written so that one range of (status, due_at) holds every match.
    unfinished = Job.status.in_((*WAITING, JobStatus.RUNNING)) & (Job.due_at < now - after)
    return and_(unfinished, not_started, or_(*overdue))


def delete_expired(db: Session, cutoff: datetime, limit: int) -> list[tuple[str, dict[str, Any]]]:
    """Delete up to `limit` of the jobs that finished before `cutoff`, the oldest of each status
    first; the kind and payload of each deleted one.

    The statement that deletes checks again that each job is finished and expired: one retried
    since it was chosen stays, and so do its files.
    """
    chosen: list[str] = []
    for status in FINISHED:  # each status's oldest, read in order from (status, finished_at)
        oldest = select(Job.id).where(Job.status == status, Job.finished_at < cutoff)
        chosen += db.scalars(oldest.order_by(Job.finished_at).limit(limit - len(chosen)))
        if len(chosen) >= limit:
            break
    if not chosen:
        return []
    # The same test again, written so that no index serves it: the planner looks up the chosen
    # ids by primary key rather than reading every expired job's entry.
    still = func.coalesce(Job.status, "").in_(FINISHED)
    expired = and_(still, func.coalesce(Job.finished_at, cutoff) < cutoff)
    deleted = db.execute(
        delete(Job)
        .where(Job.id.in_(chosen), expired)
        .returning(Job.kind, Job.payload)
        .execution_options(synchronize_session=False)
    )
    return [(kind, payload) for kind, payload in deleted]


def delete_expired_keys(db: Session, now: datetime) -> int:
    """Delete the idempotency keys past their time to live."""
    deleted = db.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at < now))
    return int(deleted.rowcount)  # type: ignore[attr-defined]


def upload_keys(db: Session, keys: Collection[str]) -> set[str]:
    """Those of `keys` that a job record names as its upload (looked up in their index)."""
    found: set[str] = set()
    ordered = sorted(keys)
    for start in range(0, len(ordered), 500):
        some = ordered[start : start + 500]
        found.update(db.scalars(select(UPLOAD_KEY).select_from(Job).where(UPLOAD_KEY.in_(some))))
    return found


def sum_counts(db: Session, chunk: int = 10_000) -> int:
    """Replace the rows of `job_counts` by their sums, one row per kind and status; how many rows
    it summed. Rows that other transactions add meanwhile stay, to be summed next time. It reads
    `chunk` rows at a time, so a long backlog of changes costs time, not memory."""
    sums: Counter[tuple[str, str]] = Counter()
    summed = last = 0
    while True:
        # Each chunk starts after the last: on PostgreSQL the rows this transaction deleted stay
        # in the index until it ends, and starting from the first each time read them all again.
        first = (
            select(JobCount.id)
            .where(JobCount.id > last)
            .order_by(JobCount.id)
            .limit(chunk)
            .scalar_subquery()
        )
        rows = db.execute(
            delete(JobCount)
            .where(JobCount.id.in_(first))
            .returning(JobCount.id, JobCount.kind, JobCount.status, JobCount.change)
        ).all()
        for row_id, kind, status, change in rows:
            sums[(kind, status)] += change
            last = max(last, row_id)
        summed += len(rows)
        if len(rows) < chunk:
            break
    totals = [{"kind": k, "status": s, "change": n} for (k, s), n in sums.items() if n]
    if totals:
        db.execute(insert(JobCount), totals)
    return summed
