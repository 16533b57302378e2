"""Delete finished job records older than the retention period, with their files, and expired
idempotency keys."""

import logging
from collections.abc import Callable
from datetime import datetime

from . import database, files, maintenance
from .database import utcnow
from .models import JobKind
from .settings import get_settings

logger = logging.getLogger(__name__)
BATCH_SIZE = 500


def delete_expired(
    now: datetime | None = None, on_batch: Callable[[], None] = lambda: None
) -> dict[str, int]:
    """Each batch's statement deletes only jobs still finished and expired; then the files of
    exactly those. A run cut short between the two leaves files no record names, which the
    reconciler's orphan sweep deletes."""
    settings = get_settings()
    now = now or utcnow()
    cutoff = now - settings.retention
    uploads = files.Uploads(settings.upload_dir)
    deleted = {"jobs": 0, "files": 0, "idempotency_keys": 0}
    while True:
        with database.session() as db:
            batch = maintenance.delete_expired(db, cutoff, BATCH_SIZE)
        if not batch:
            break
        for kind, payload in batch:
            if kind == JobKind.PROCESS_FILE:
                uploads.delete(payload["key"])
                deleted["files"] += 1
        deleted["jobs"] += len(batch)
        on_batch()
    with database.session() as db:
        deleted["idempotency_keys"] = maintenance.delete_expired_keys(db, now)
    logger.info(
        "cleanup deleted %(jobs)d job records, %(files)d files and %(idempotency_keys)d "
        "idempotency keys",
        deleted,
    )
    return deleted
