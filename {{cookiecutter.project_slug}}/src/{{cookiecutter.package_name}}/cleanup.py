"""Delete finished job records older than the retention period, with their files."""

import logging
from collections.abc import Callable
from datetime import datetime

from . import files, records
from .database import utcnow
from .settings import get_settings

logger = logging.getLogger(__name__)
BATCH_SIZE = 500


def delete_expired(
    now: datetime | None = None, on_batch: Callable[[], None] = lambda: None
) -> dict[str, int]:
    """Idempotent: files go first, so a run cut short leaves rows the next run finishes."""
    cutoff = (now or utcnow()) - get_settings().retention
    deleted = {"jobs": 0, "files": 0}
    while batch := records.finished_before(cutoff, BATCH_SIZE):
        for job in batch:
            if job.kind == records.JobKind.PROCESS_FILE:
                files.delete(job.payload["key"])
                deleted["files"] += 1
        deleted["jobs"] += records.delete_jobs([job.id for job in batch])
        on_batch()
    logger.info("cleanup deleted %(jobs)d job records and %(files)d files", deleted)
    return deleted
