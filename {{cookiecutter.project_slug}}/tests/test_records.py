"""Job records: the schema, the claim that keeps one worker per job, and the settings."""

from collections.abc import Iterator
from datetime import timedelta

import pytest
from alembic import command
from alembic.config import Config
from pydantic import ValidationError
from sqlalchemy import update

from {{ cookiecutter.package_name }} import database, jobs, records
from {{ cookiecutter.package_name }}.database import engine_url, utcnow
from {{ cookiecutter.package_name }}.records import Claim, JobKind
from {{ cookiecutter.package_name }}.settings import Settings

from tests.conftest import PROJECT_ROOT

LEASE = timedelta(seconds=30)


def test_migrations_match_the_models(migrated_database: None) -> None:
    config = Config(PROJECT_ROOT / "alembic.ini")
    config.attributes["configure_logger"] = False
    command.check(config)  # raises if the models need a migration the project lacks


@pytest.fixture
def job(migrated_database: None) -> Iterator[records.Job]:
    created = records.create_job(JobKind.PROCESS_FILE, {"key": "f" * 32})
    yield created
    records.discard(created.id)


def test_a_job_is_claimed_once(job: records.Job) -> None:
    assert records.claim(job.id, LEASE, max_attempts=3) is Claim.CLAIMED
    assert records.claim(job.id, LEASE, max_attempts=3) is Claim.BUSY
    records.succeed(job.id, {})
    assert records.claim(job.id, LEASE, max_attempts=3) is Claim.DONE
    assert records.claim("no-such-job", LEASE, max_attempts=3) is Claim.MISSING


def test_a_job_whose_worker_went_silent_is_taken_over(job: records.Job) -> None:
    assert records.claim(job.id, LEASE, max_attempts=3) is Claim.CLAIMED
    with database.session() as db:
        db.execute(
            update(records.Job)
            .where(records.Job.id == job.id)
            .values(heartbeat_at=utcnow() - LEASE - timedelta(seconds=1))
        )
    assert records.claim(job.id, LEASE, max_attempts=3) is Claim.CLAIMED
    assert records.get_job(job.id).attempts == 2  # type: ignore[union-attr]


def test_a_job_that_loses_its_worker_every_time_fails(job: records.Job) -> None:
    silent = {"heartbeat_at": utcnow() - LEASE * 2}
    for _ in range(2):
        assert records.claim(job.id, LEASE, max_attempts=2) is Claim.CLAIMED
        with database.session() as db:
            db.execute(update(records.Job).where(records.Job.id == job.id).values(**silent))
    assert records.claim(job.id, LEASE, max_attempts=2) is Claim.DONE
    failed = records.get_job(job.id)
    assert failed is not None
    assert failed.status == "failed"
    assert "worker lost" in (failed.error or "")


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


def test_settings_read_seconds_and_refuse_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETENTION", "60")
    monkeypatch.setenv("CLEANUP_INTERVAL", "PT5M")
    settings = Settings()
    assert settings.retention == timedelta(seconds=60)
    assert settings.cleanup_interval == timedelta(minutes=5)
    monkeypatch.setenv("CLEANUP_INTERVAL", "0")
    with pytest.raises(ValidationError):
        Settings()
