"""The scheduled cleanup deletes old finished jobs and their files, and keeps the rest."""

import io
import threading
import time
from datetime import timedelta

from sqlalchemy import text, update

from {{ cookiecutter.package_name }} import cleanup, database, files, records
from {{ cookiecutter.package_name }}.database import utcnow
from {{ cookiecutter.package_name }}.models import Job, JobKind, JobStatus
from {{ cookiecutter.package_name }}.settings import get_settings

from tests import workers
from tests.conftest import Api, stored_files


def upload(api: Api, name: str) -> dict[str, object]:
    _, body = api.upload("/files", "file", name, f"id\n{name}\n".encode(), "text/csv")
    return api.wait_for_job(body["job_id"])


def age(job_id: str, by: timedelta) -> None:
    with database.session() as db:
        db.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(finished_at=utcnow() - by, created_at=utcnow() - by)
        )


def get_job(job_id: str) -> Job | None:
    with database.session() as db:
        return records.get_job(db, job_id)


def test_cleanup_deletes_expired_records_and_files_only(api: Api) -> None:
    retention = get_settings().retention
    old, recent = upload(api, "old.csv"), upload(api, "recent.csv")
    with database.session() as db:
        unfinished = records.create_job(db, JobKind.PROCESS_FILE, {"key": "0" * 32})
    age(str(old["id"]), retention + timedelta(minutes=1))
    age(str(recent["id"]), retention - timedelta(minutes=1))
    age(unfinished.id, retention * 2)
    old_key = get_job(str(old["id"])).payload["key"]  # type: ignore[union-attr]
    assert old_key in stored_files()

    workers.trigger_cleanup()

    # The files go after the transaction that deleted their records: wait for both.
    deadline = time.monotonic() + 20
    while (get_job(str(old["id"])), old_key in stored_files()) != (None, False) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert get_job(str(old["id"])) is None
    assert old_key not in stored_files()
    assert get_job(str(recent["id"])) is not None
    assert get_job(unfinished.id) is not None
    recent_key = get_job(str(recent["id"])).payload["key"]  # type: ignore[union-attr]
    assert recent_key in stored_files()
    with database.session() as db:
        records.discard(db, unfinished.id)


def test_cleanup_runs_every_cleanup_interval() -> None:
    assert workers.cleanup_every_seconds() == get_settings().cleanup_interval.total_seconds()


def test_a_job_retried_while_the_cleanup_deletes_it_stays_with_its_file(
    migrated_database: None,
) -> None:
    settings = get_settings()
    content = b"id\n1\n"
    stored = files.Uploads(settings.upload_dir).store(
        io.BytesIO(content), "late.csv", "text/csv", len(content)
    )
    with database.session() as db:
        job = records.create_job(db, JobKind.PROCESS_FILE, stored.to_payload())
        db.execute(update(Job).where(Job.id == job.id).values(status=JobStatus.FAILED))
    age(job.id, settings.retention + timedelta(minutes=1))

    cleaned: list[dict[str, int]] = []
    cleaner = threading.Thread(target=lambda: cleaned.append(cleanup.delete_expired()))
    with database.session() as db:  # the retry, not yet committed, when the cleanup deletes
        assert records.reopen(db, job.id) is not None
        cleaner.start()
        wait_for_a_lock()
    cleaner.join(30)

    assert cleaned, "the cleanup did not finish"
    kept = get_job(job.id)
    assert kept is not None
    assert kept.status == JobStatus.QUEUED
    assert stored.key in stored_files()
    with database.session() as db:
        records.discard(db, job.id)
    files.Uploads(settings.upload_dir).delete(stored.key)


def wait_for_a_lock() -> None:
    """Until another transaction waits for a lock (with SQLite, which cannot tell, a moment)."""
    if database.engine().dialect.name == "sqlite":
        time.sleep(0.5)
        return
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    deadline = time.monotonic() + 10
    while True:
        with database.session() as db:  # one transaction per look: each sees the server anew
            if db.scalar(waiting):
                return
        assert time.monotonic() < deadline, "the cleanup never waited for the retry"
        time.sleep(0.05)
