"""The scheduled cleanup deletes old finished jobs and their files, and keeps the rest."""

import time
from datetime import timedelta

from sqlalchemy import update

from {{ cookiecutter.package_name }} import database, records
from {{ cookiecutter.package_name }}.database import utcnow
from {{ cookiecutter.package_name }}.settings import get_settings

from tests import workers
from tests.conftest import Api, stored_files


def upload(api: Api, name: str) -> dict[str, object]:
    _, body = api.upload("/files", "file", name, f"id\n{name}\n".encode(), "text/csv")
    return api.wait_for_job(body["job_id"])


def age(job_id: str, by: timedelta) -> None:
    with database.session() as db:
        db.execute(
            update(records.Job)
            .where(records.Job.id == job_id)
            .values(finished_at=utcnow() - by, created_at=utcnow() - by)
        )


def test_cleanup_deletes_expired_records_and_files_only(api: Api) -> None:
    retention = get_settings().retention
    old, recent = upload(api, "old.csv"), upload(api, "recent.csv")
    unfinished = records.create_job(records.JobKind.PROCESS_FILE, {"key": "0" * 32})
    age(str(old["id"]), retention + timedelta(minutes=1))
    age(str(recent["id"]), retention - timedelta(minutes=1))
    age(unfinished.id, retention * 2)
    old_key = records.get_job(str(old["id"])).payload["key"]  # type: ignore[union-attr]
    assert old_key in stored_files()

    workers.trigger_cleanup()

    deadline = time.monotonic() + 20
    while records.get_job(str(old["id"])) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert records.get_job(str(old["id"])) is None
    assert old_key not in stored_files()
    assert records.get_job(str(recent["id"])) is not None
    assert records.get_job(unfinished.id) is not None
    recent_key = records.get_job(str(recent["id"])).payload["key"]  # type: ignore[union-attr]
    assert recent_key in stored_files()
    records.discard(unfinished.id)


def test_cleanup_runs_every_cleanup_interval() -> None:
    assert workers.cleanup_every_seconds() == get_settings().cleanup_interval.total_seconds()
