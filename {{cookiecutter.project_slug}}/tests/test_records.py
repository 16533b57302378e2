"""Job records: the schema, the claim that keeps one worker per job, and the settings."""

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from pydantic import ValidationError
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from {{ cookiecutter.package_name }} import (
    database,
    jobs,
    leases,
    maintenance,
    records,
    runs,
    stats,
)
from {{ cookiecutter.package_name }}.database import engine_url, utcnow
from {{ cookiecutter.package_name }}.models import Job, JobCount, JobKind, JobStatus, Outcome
from {{ cookiecutter.package_name }}.once import once
from {{ cookiecutter.package_name }}.runs import Claim, Run
from {{ cookiecutter.package_name }}.settings import Settings

from tests.conftest import PROJECT_ROOT

LEASE = timedelta(seconds=30)


def test_migrations_match_the_models(migrated_database: None) -> None:
    config = Config(PROJECT_ROOT / "alembic.ini")
    config.attributes["configure_logger"] = False
    command.check(config)  # raises if the models need a migration the project lacks


@pytest.fixture
def job(migrated_database: None) -> Iterator[Job]:
    with database.session() as db:
        created = records.create_job(db, JobKind.PROCESS_FILE, {"key": "f" * 32})
    yield created
    with database.session() as db:
        records.discard(db, created.id)


def claim(job_id: str, max_attempts: int = 3) -> tuple[Claim, Run | None]:
    with database.session() as db:
        return runs.claim(db, job_id, LEASE, max_attempts)


def get_job(job_id: str) -> Job | None:
    with database.session() as db:
        return records.get_job(db, job_id)


def test_a_job_is_claimed_once(job: Job) -> None:
    outcome, current = claim(job.id)
    assert outcome is Claim.CLAIMED
    assert current is not None
    assert claim(job.id)[0] is Claim.BUSY
    with database.session() as db:
        assert runs.succeed(db, current, {})
    assert claim(job.id)[0] is Claim.DONE
    assert claim("no-such-job")[0] is Claim.MISSING


def test_a_job_whose_worker_went_silent_is_taken_over(job: Job) -> None:
    assert claim(job.id)[0] is Claim.CLAIMED
    lapse(job.id)
    assert claim(job.id)[0] is Claim.CLAIMED
    assert get_job(job.id).attempts == 2  # type: ignore[union-attr]


def lapse(job_id: str) -> None:
    """Make the job's current run look silent for longer than its lease."""
    with database.session() as db:
        stale = utcnow() - LEASE - timedelta(seconds=1)
        db.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=stale))


def columns(job_id: str) -> dict[str, object]:
    found = get_job(job_id)
    assert found is not None
    return {column.name: getattr(found, column.name) for column in Job.__table__.columns}


def test_a_run_taken_over_can_change_nothing(job: Job) -> None:
    first = claim(job.id)[1]
    lapse(job.id)
    second = claim(job.id)[1]
    assert first is not None
    assert second is not None
    assert second.fence > first.fence
    before = columns(job.id)

    with database.session() as db:
        assert not runs.renew(db, first, 0.5)
        assert not runs.succeed(db, first, {"done": "twice"})
        assert not runs.retrying(db, first, "error", "error", 1.0)
        assert not runs.postpone(db, first, "reason", 1.0)
        assert not runs.fail(db, first, "error", "error")
    assert not leases.record(first, lambda db: runs.succeed(db, first, {}))

    assert columns(job.id) == before
    with database.session() as db:
        history = [(a.fence, a.outcome) for a in records.attempts_of(db, job.id)]
    assert history == [(first.fence, Outcome.LOST), (second.fence, None)]
    with database.session() as db:  # the current run's writes still count
        assert runs.succeed(db, second, {})
        attempts = records.attempts_of(db, job.id)
    assert [a.outcome for a in attempts] == [Outcome.LOST, Outcome.SUCCEEDED]


def test_a_job_that_loses_its_worker_every_time_fails(job: Job) -> None:
    silent = {"heartbeat_at": utcnow() - LEASE * 2}
    for _ in range(2):
        assert claim(job.id, 2)[0] is Claim.CLAIMED
        with database.session() as db:
            db.execute(update(Job).where(Job.id == job.id).values(**silent))
    assert claim(job.id, 2)[0] is Claim.DONE
    failed = get_job(job.id)
    assert failed is not None
    assert failed.status == "failed"
    assert "worker lost" in (failed.error or "")


def test_counts_follow_every_change_and_survive_their_sum(job: Job) -> None:
    def count(status: str) -> int:
        with database.session() as db:
            return stats.counts(db)[(JobKind.PROCESS_FILE, status)]

    queued, running, succeeded = count("queued"), count("running"), count("succeeded")
    _, current = claim(job.id)
    assert current is not None
    assert (count("queued"), count("running")) == (queued - 1, running + 1)
    with database.session() as db:
        runs.succeed(db, current, {})
        maintenance.sum_counts(db)
        assert maintenance.sum_counts(db) <= len(JobKind) * len(JobStatus)
    assert (count("running"), count("succeeded")) == (running, succeeded + 1)
    with database.session() as db:
        records.discard(db, job.id)
    assert count("succeeded") == succeeded


def test_a_backlog_of_changes_is_summed_a_chunk_at_a_time(migrated_database: None) -> None:
    """However many rows of changes wait, one sum leaves a row per kind and status, and the
    same counts."""
    pair = (JobKind.WELCOME_EMAIL, JobStatus.RETRYING)
    with database.session() as db:
        before = stats.counts(db).get(pair, 0)
        changes = [1, 1, -1, 1, -1, -1, 1, -1]
        db.add_all(JobCount(kind=pair[0], status=pair[1], change=change) for change in changes)
    with database.session() as db:
        assert maintenance.sum_counts(db, chunk=3) >= len(changes)
    with database.session() as db:
        left = db.scalar(select(func.count()).select_from(JobCount))
        assert left is not None
        assert left <= len(JobKind) * len(JobStatus)
        assert stats.counts(db).get(pair, 0) == before


def test_the_readers_read_ranges_of_indexes(migrated_database: None) -> None:
    """No reader of the records scans the whole jobs table (the plans, on an empty table)."""
    now = utcnow()
    readers: list[Callable[[Session], object]] = [
        lambda db: stats.recent(db, None, None, 50),
        lambda db: stats.recent(db, JobKind.WELCOME_EMAIL, None, 50),
        lambda db: stats.recent(db, None, JobStatus.FAILED, 50),
        lambda db: stats.recent(db, JobKind.PROCESS_FILE, JobStatus.SUCCEEDED, 50),
        stats.last_finished,
        stats.oldest_queued,
        lambda db: stats.durations(db, 1000),
        stats.republications,
        lambda db: stats.per_minute(db, now, 60),
        lambda db: maintenance.stuck_jobs(db, timedelta(minutes=5), 3, 100),
        lambda db: maintenance.upload_keys(db, {"f" * 32}),
    ]
    statements: list[tuple[str, Any]] = []
    engine = database.engine()
    postgresql = engine.dialect.name == "postgresql"

    def capture(*args: Any) -> None:
        statements.append((args[2], args[3]))

    # This connection's statements only: a worker in this process shares the engine.
    with engine.connect() as connection:
        event.listen(connection, "before_cursor_execute", capture)
        for reader in readers:
            reader(Session(connection))
    assert len(statements) >= len(readers), statements
    with engine.connect() as connection:
        if postgresql:
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")  # until the rollback
        explain = "EXPLAIN " if postgresql else "EXPLAIN QUERY PLAN "
        for statement, parameters in statements:
            plan = [row[-1] for row in connection.exec_driver_sql(explain + statement, parameters)]
            whole = [s for s in plan if "Seq Scan on jobs" in s or s.strip() == "SCAN jobs"]
            assert not whole, (statement, plan)
        connection.rollback()


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    for attempt in range(1, 10):
        ceiling = min(1.0, 0.2 * 2 ** (attempt - 1))
        delays = {jobs.backoff(attempt) for _ in range(20)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(delays) > 1


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgres://u:p@db.example:5432/app", "postgresql+psycopg"),
        ("postgresql://u:p@db.example/app", "postgresql+psycopg"),
        ("sqlite:///relative/app.db", "sqlite"),
        ("sqlite:////absolute/app.db", "sqlite"),
    ],
)
def test_database_urls_as_platforms_give_them(given: str, driver: str) -> None:
    assert engine_url(given).drivername == driver


def test_threads_that_ask_at_once_share_one_engine() -> None:
    # A worker's first jobs all start at the same moment; an engine each would keep
    # connections no other thread can use.
    made = []

    @once
    def slow_engine(url: str) -> object:
        made.append(url)
        time.sleep(0.05)  # as long as making the first engine can take
        return object()

    start = threading.Barrier(8)

    def ask(_: int) -> object:
        start.wait()
        return slow_engine("postgresql://db.example/app")

    with ThreadPoolExecutor(8) as threads:
        engines = set(threads.map(ask, range(8)))
    assert (len(engines), made) == (1, ["postgresql://db.example/app"])
    assert isinstance(database._engine, once)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_a_child_forked_while_a_value_was_being_made_is_not_stuck() -> None:
    # Celery's prefork pool and gunicorn fork their workers from processes that have threads.
    making, finish = threading.Event(), threading.Event()

    @once
    def made(key: str) -> str:
        if key == "slow":
            making.set()
            finish.wait(10)
        return key

    maker = threading.Thread(target=made, args=("slow",))
    maker.start()
    assert making.wait(10)
    pid = os.fork()
    if pid == 0:  # the child, forked while the parent's maker held the lock
        os._exit(0 if made("quick") == "quick" else 1)
    finish.set()
    maker.join()
    deadline = time.monotonic() + 10
    while (ended := os.waitpid(pid, os.WNOHANG)) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the child waited for a lock that no thread of its own held")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(ended[1]) == 0


def test_settings_read_seconds_and_refuse_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETENTION", "60")
    monkeypatch.setenv("CLEANUP_INTERVAL", "PT5M")
    settings = Settings()
    assert settings.retention == timedelta(seconds=60)
    assert settings.cleanup_interval == timedelta(minutes=5)
    monkeypatch.setenv("CLEANUP_INTERVAL", "0")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("CLEANUP_INTERVAL", "60")
    monkeypatch.setenv("IDEMPOTENCY_TTL", "0")
    with pytest.raises(ValidationError, match="IDEMPOTENCY_TTL"):
        Settings()


def test_a_cancelled_job_is_never_claimed_and_expires_as_a_finished_one(job: Job) -> None:
    with database.session() as db:
        was, cancelled = records.cancel(db, job.id)
    assert cancelled is not None
    assert (was, cancelled.status) == ("queued", "cancelled")
    assert claim(job.id) == (Claim.DONE, None)

    long_ago = utcnow() - timedelta(days=3650)
    with database.session() as db:
        db.execute(update(Job).where(Job.id == job.id).values(finished_at=long_ago))
        deleted = maintenance.delete_expired(db, long_ago + timedelta(days=1), 100)
    assert deleted == [(JobKind.PROCESS_FILE, job.payload)]
