"""Jobs whose message the broker lost are published again; orphan uploads are deleted."""

{% if cookiecutter.broker == "sqs" -%}
import io
{% endif -%}
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import update

from {{ cookiecutter.package_name }} import database, files, reconcile, records, runs
from {{ cookiecutter.package_name }}.database import utcnow
from {{ cookiecutter.package_name }}.maintenance import stuck_jobs
from {{ cookiecutter.package_name }}.models import Job{% if cookiecutter.broker == "sqs" %}, JobKind{% endif %}
from {{ cookiecutter.package_name }}.settings import Settings, get_settings

from tests import workers
from tests.conftest import Api, Mailbox
from tests.processes import procfile_command, stop
from tests.test_dashboard import metrics

SETTINGS = get_settings()
AFTER = SETTINGS.stuck_job_after
TICK = reconcile.every()
# Time for worker processes to start, on a busy machine.
START_UP = 15.0


def set_job(job_id: str, **values: Any) -> None:
    with database.session() as db:
        db.execute(update(Job).where(Job.id == job_id).values(**values))


def overdue(job_id: str) -> None:
    """Make a job look as if it had waited past STUCK_JOB_AFTER without starting."""
    set_job(job_id, due_at=utcnow() - AFTER - timedelta(seconds=1))


def record(job_id: str) -> Job:
    with database.session() as db:
        job = records.get_job(db, job_id)
    assert job is not None
    return job


def record_signup(address: str, name: str) -> Job:
    """A signup's email job, recorded as the web process records it, and never published."""
    with database.session() as db:
        return records.create_signup_jobs(db, address, name, notify=False)[0]


def new_address() -> str:
    return f"stuck-{uuid.uuid4().hex[:8]}@example.com"


def test_the_reconciler_runs_at_least_every_half_stuck_job_after() -> None:
    assert 1 <= workers.reconcile_every_seconds() <= AFTER.total_seconds() / 2


def test_stuck_job_after_must_exceed_the_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUCK_JOB_AFTER", str(SETTINGS.job_lease.total_seconds()))
    with pytest.raises(ValidationError, match="STUCK_JOB_AFTER"):
        Settings()


def test_a_job_whose_message_never_reached_the_broker_completes(api: Api, mailbox: Mailbox) -> None:
    # The web process committed the record, then died before it published the message.
    address = new_address()
    job = record_signup(address, "Ada")
    overdue(job.id)

    workers.reconcile_now()

    finished = api.wait_for_job(job.id)
    assert finished["status"] == "succeeded", finished
    assert finished["attempts"] == 1
    assert record(job.id).publications == 1
    assert metrics(api)[("jobs_republished", ())] >= 1
    assert len(mailbox.to(address)) == 1


def test_a_slow_backlog_published_again_still_runs_each_job_once(
    api: Api, mailbox: Mailbox, worker: workers.ThreadWorker
) -> None:
    addresses = [new_address() for _ in range(3)]
    worker.stop()
    try:
        job_ids = [
            api.post_json("/signups", {"email": a, "name": "Grace"})[1]["job_id"] for a in addresses
        ]
        for job_id in job_ids:
            overdue(job_id)  # longer in the queue than STUCK_JOB_AFTER
        workers.reconcile_now()
    finally:
        worker.start()

    for job_id, address in zip(job_ids, addresses, strict=True):
        finished = api.wait_for_job(job_id)
        assert finished["status"] == "succeeded", finished
        assert finished["attempts"] == 1
        assert len(mailbox.to(address)) == 1
        # Its message was still in the queue (ARQ holds its id; Celery's queue was not empty):
        # nothing was published twice{% if cookiecutter.broker == "sqs" %} (SQS counts its messages
        # only approximately, and may say none wait a moment after they were sent: then one copy
        # is published, which the claim makes a no-op){% endif %}.
        assert record(job_id).publications {% if cookiecutter.broker == "sqs" %}<= 1{% else %}== 0{% endif %}


def test_a_backlog_longer_than_every_publication_fails_nothing_while_queued(
    api: Api, mailbox: Mailbox, worker: workers.ThreadWorker
) -> None:
    most = SETTINGS.job_max_attempts
    addresses = [new_address() for _ in range(2)]
    worker.stop()
    try:
        job_ids = [
            api.post_json("/signups", {"email": a, "name": "Alan"})[1]["job_id"] for a in addresses
        ]
        for _ in range(most + 1):  # waited past every publication's wait, and still queued
            for job_id in job_ids:
                set_job(job_id, due_at=utcnow() - AFTER * (most + 2))
            workers.reconcile_now()
            assert [record(job_id).status for job_id in job_ids] == ["queued"] * len(job_ids)
            assert [record(job_id).publications for job_id in job_ids] == [0] * len(job_ids)
    finally:
        worker.start()

    for job_id, address in zip(job_ids, addresses, strict=True):
        finished = api.wait_for_job(job_id)
        assert (finished["status"], finished["attempts"]) == ("succeeded", 1), finished
        assert len(mailbox.to(address)) == 1


def test_a_retried_job_is_not_taken_for_stuck(migrated_database: None) -> None:
    job = record_signup(new_address(), "Ada")
    long_ago = utcnow() - AFTER * 10
    set_job(job.id, status="failed", due_at=long_ago, finished_at=long_ago, publications=2)

    with database.session() as db:
        assert records.reopen(db, job.id) is not None
    most = SETTINGS.job_max_attempts
    with database.session() as db:
        assert job.id not in {stuck.id for stuck in stuck_jobs(db, AFTER, most, 1000)}

    overdue(job.id)  # STUCK_JOB_AFTER after the retry, it would be
    with database.session() as db:
        assert job.id in {stuck.id for stuck in stuck_jobs(db, AFTER, most, 1000)}
        records.discard(db, job.id)


def test_a_running_job_is_left_alone_while_its_worker_reports(api: Api, mailbox: Mailbox) -> None:
    address = new_address()
    job = record_signup(address, "Barbara")
    with database.session() as db:
        claimed, current = runs.claim(db, job.id, SETTINGS.job_lease, SETTINGS.job_max_attempts)
    assert claimed is runs.Claim.CLAIMED
    assert current is not None
    long_ago = utcnow() - AFTER * 10
    set_job(job.id, due_at=long_ago, started_at=long_ago)
    with database.session() as db:
        assert runs.renew(db, current, 0.5)  # a long job that keeps reporting

    workers.reconcile_now()

    assert record(job.id).status == "running"
    assert record(job.id).publications == 0

    # Its worker went silent, and the broker lost its message: it is taken over.
    set_job(job.id, heartbeat_at=utcnow() - AFTER - timedelta(seconds=1))
    workers.reconcile_now()

    finished = api.wait_for_job(job.id)
    assert finished["status"] == "succeeded", finished
    assert finished["attempts"] == 2
    assert record(job.id).publications == 1
    assert len(mailbox.to(address)) == 1


def test_a_job_no_worker_takes_fails_after_its_last_publication(api: Api, mailbox: Mailbox) -> None:
    address = new_address()
    job = record_signup(address, "Edsger")
    most = SETTINGS.job_max_attempts
    set_job(job.id, publications=most, due_at=utcnow() - AFTER * (most + 2))

    workers.reconcile_now()

    failed = api.wait_for_job(job.id)
    assert failed["status"] == "failed", failed
    assert f"never started: published again {most} times" in failed["error"]
    assert mailbox.to(address) == []


def test_orphan_uploads_are_deleted_when_old_and_kept_when_fresh(api: Api) -> None:
    uploads = files.Uploads(SETTINGS.upload_dir)
    upload_dir = uploads.directory
    upload_dir.mkdir(parents=True, exist_ok=True)
    _, body = api.upload("/files", "file", "kept.csv", b"id\n1\n", "text/csv")
    assert api.wait_for_job(body["job_id"])["status"] == "succeeded"
    named = record(body["job_id"]).payload["key"]
    orphan, fresh, unfinished = (uuid.uuid4().hex for _ in range(3))
    paths = {
        "named": uploads.path(named),
        "orphan": uploads.path(orphan),
        "orphan thumbnail": uploads.thumbnail(orphan),
        "unfinished": upload_dir / f"{unfinished}.part",
        "fresh": uploads.path(fresh),
        "fresh unfinished": upload_dir / f"{fresh}.part",
        "not ours": upload_dir / "notes.txt",
    }
    an_hour_ago = time.time() - reconcile.ORPHAN_AGE.total_seconds() - 60
    for name, path in paths.items():
        if not path.exists():
            path.write_bytes(b"data")
        if not name.startswith("fresh"):
            os.utime(path, (an_hour_ago, an_hour_ago))

    workers.reconcile_now()

    left = {name for name, path in paths.items() if path.exists()}
    assert left == {"named", "fresh", "fresh unfinished", "not ours"}
    for path in paths.values():
        path.unlink(missing_ok=True)


# Drills: worker processes and a scheduler, as the Procfile runs them, on a broker that lost jobs.


@contextmanager
def scheduled_workers(broker_url: str) -> Iterator[None]:
    """The Procfile's workers and scheduler, using this broker, for as long as the block runs."""
    bin_dir = str(Path(sys.executable).parent)
    env = os.environ | {"BROKER_URL": broker_url}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    cwd = tempfile.mkdtemp(prefix="workers-")  # the scheduler keeps its state file there
    started = []
    try:
        for name in ("worker", "file_worker", "scheduler"):
            try:
                command = procfile_command(name)
            except LookupError:
                continue
            started.append(
                subprocess.Popen(
                    ["/bin/sh", "-c", f"exec {command}"], env=env, cwd=cwd, start_new_session=True
                )
            )
        yield
    finally:
        for process in started:
            stop(process)


def accepted(answer: tuple[int, Any]) -> str:
    status, body = answer
    assert status == 202, body
    return str(body["job_id"])


def signup(address: str) -> dict[str, str]:
    return {"email": address, "name": "Margaret"}


def submit(sign_up: Callable[[str], str], upload: Callable[[bytes], str]) -> dict[str, str]:
    """Three signups and an upload: their job ids, with the address each email goes to."""
    jobs = {}
    for _ in range(3):
        address = new_address()
        jobs[sign_up(address)] = address
    jobs[upload(b"id,name\n1,Ada\n")] = ""
    return jobs


def assert_all_complete_once(
    api: Api, mailbox: Mailbox, jobs: dict[str, str], since: float
) -> None:
    """Each job succeeds within STUCK_JOB_AFTER and a tick (and a start-up); each email once."""
    limit = (AFTER + TICK).total_seconds() + START_UP
    for job_id, address in jobs.items():
        finished = api.wait_for_job(job_id, timeout=limit - (time.monotonic() - since))
        assert finished["status"] == "succeeded", finished
        assert record(job_id).publications >= 1
        if address:
            assert len(mailbox.to(address)) == 1
    print(f"all jobs done {time.monotonic() - since:.1f}s after they were accepted")


{% if cookiecutter.broker == "sqs" -%}
def record_signup_only(address: str) -> str:
    return record_signup(address, "Margaret").id


def record_upload_only(content: bytes) -> str:
    stored = files.Uploads(SETTINGS.upload_dir).store(
        io.BytesIO(content), "lost.csv", "text/csv", len(content)
    )
    with database.session() as db:
        return records.create_job(db, JobKind.PROCESS_FILE, stored.to_payload()).id


@pytest.mark.drill
@pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL")
def test_jobs_never_published_complete(
    api: Api, mailbox: Mailbox, without_thread_worker: None
) -> None:
    # The web process died after it committed each record, before it published the message.
    # (SQS allows one purge of a queue a minute: this is how its drill loses messages.)
    accepted_at = time.monotonic()
    jobs = submit(record_signup_only, record_upload_only)
    with scheduled_workers(os.environ["BROKER_URL"]):
        assert_all_complete_once(api, mailbox, jobs, since=accepted_at)
{% else -%}
@pytest.mark.drill
@pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL")
def test_jobs_complete_after_their_queue_is_purged(
    api: Api, mailbox: Mailbox, without_thread_worker: None
) -> None:
    accepted_at = time.monotonic()
    jobs = submit(
        lambda address: accepted(api.post_json("/signups", signup(address))),
        lambda content: accepted(api.upload("/files", "file", "lost.csv", content, "text/csv")),
    )
    workers.purge()
    with scheduled_workers(os.environ["BROKER_URL"]):
        assert_all_complete_once(api, mailbox, jobs, since=accepted_at)
{% endif -%}
