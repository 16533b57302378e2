"""Make up for what the broker lost: publish stuck jobs again, and delete orphan uploads.

Every job has a record, written before its message is published, and a worker's claim makes a
second delivery of the same job harmless. So a job that should have started long ago and has not
(its message lost with a broker restart or a purge, or never published because the web process
died in between) is simply published again. If it was only slow, one of its deliveries runs it
and the others find it done. A job published again JOB_MAX_ATTEMPTS times that still has not
started is failed, saying so: no worker takes it.

The scheduler runs this every minute, or every STUCK_JOB_AFTER / 2 when that is shorter.
"""

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from . import database, files, jobs, maintenance
from .database import utcnow
from .models import Job
from .settings import get_settings

logger = logging.getLogger(__name__)

# Publish a job's message; False when the broker says it may still hold one for this job: ARQ
# holds this job's id, or (Celery) the job's queue still has messages waiting. A job waiting in a
# backlog is then never published again, nor failed as never started.
Publish = Callable[[Job], bool | None]
BATCH_SIZE = 100
# Uploads no record names are deleted once this old: a file being stored has no record yet.
ORPHAN_AGE = timedelta(hours=1)
# Intervals, in seconds, that divide a minute: a cron schedule can fire on each of them.
_INTERVALS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)


def every() -> timedelta:
    """How often the scheduler runs the reconciler."""
    half = get_settings().stuck_job_after.total_seconds() / 2
    return timedelta(seconds=max(seconds for seconds in _INTERVALS if seconds <= max(half, 1)))


def run(publish: Publish) -> dict[str, int]:
    """One scheduled run; it stops early, leaving the rest to the next, near its time limit.
    It first sums up the job counts' changes (see models.JobCount)."""
    with database.session() as db:
        maintenance.sum_counts(db)
    counts = republish_stuck(publish) | {"orphan_uploads": delete_orphan_uploads()}
    level = logging.WARNING if counts["published_again"] or counts["failed"] else logging.INFO
    logger.log(
        level,
        "reconciler: %(published_again)d stuck jobs published again, %(still_queued)d stuck "
        "but still queued, %(failed)d failed unstarted, %(orphan_uploads)d orphan uploads deleted",
        counts,
    )
    return counts


def republish_stuck(publish: Publish) -> dict[str, int]:
    settings = get_settings()
    after, most = settings.stuck_job_after, settings.job_max_attempts
    stop_at = time.monotonic() + settings.cleanup_timeout / 2
    counts = {"published_again": 0, "still_queued": 0, "failed": 0}
    while time.monotonic() < stop_at and (batch := _stuck_batch(after, most)):
        for job in batch:
            if job.publications >= most:
                reason = f"{_state(job)}: published again {job.publications} times after its "
                reason += "message seemed lost, and no worker took it"
                with database.session() as db:
                    failed = maintenance.fail_stuck(db, job.id, after, most, reason)
                if failed:
                    logger.error("job %s (%s) failed: %s", job.id, job.kind, reason)
                    counts["failed"] += 1
                continue
            with database.session() as db:
                taken = maintenance.take_stuck(db, job.id, after, most)
            if not taken:
                continue  # started meanwhile, or another reconciler has it
            try:
                published = publish(job)
            except jobs.BrokerUnavailable as exc:
                # This job waits one more round; the others are left to the next run.
                logger.warning("reconciler stopped until its next run: %s", exc)
                return counts
            if published is False:
                counts["still_queued"] += 1  # only slow: looked at again after another wait
            else:
                with database.session() as db:
                    maintenance.published_again(db, job.id)
                counts["published_again"] += 1
                logger.info(
                    "job %s (%s) %s, due %s ago: published again (%d)",
                    job.id,
                    job.kind,
                    job.status,
                    _ago(job.due_at),
                    job.publications + 1,
                )
    return counts


def delete_orphan_uploads() -> int:
    """Delete uploads that no record names (the web process died before it wrote one), and
    files whose writing never finished, once they are ORPHAN_AGE old."""
    stale = list(files.Uploads(get_settings().upload_dir).written_before(utcnow() - ORPHAN_AGE))
    if not stale:
        return 0
    with database.session() as db:
        named = maintenance.upload_keys(db, {key for key, _, _ in stale})
    deleted = 0
    for key, path, partial in stale:
        if partial or key not in named:
            path.unlink(missing_ok=True)
            logger.info("deleted orphan upload %s", path.name)
            deleted += 1
    return deleted


def _stuck_batch(after: timedelta, most: int) -> Sequence[Job]:
    with database.session() as db:
        return maintenance.stuck_jobs(db, after, most, BATCH_SIZE)


def _state(job: Job) -> str:
    return "never started" if job.attempts == 0 else f"not resumed after attempt {job.attempts}"


def _ago(moment: datetime) -> str:
    return f"{(utcnow() - moment).total_seconds():.0f}s"
