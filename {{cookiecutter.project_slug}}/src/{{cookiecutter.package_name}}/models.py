"""The tables: signups, their jobs, each attempt of a job, and idempotency keys."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler

from .database import Base, UTCDateTime, utcnow


class JobKind(StrEnum):
    WELCOME_EMAIL = "welcome_email"
    PROCESS_FILE = "process_file"
    SIGNUP_WEBHOOK = "signup_webhook"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
WAITING = (JobStatus.QUEUED, JobStatus.RETRYING)


# Written as the indexes on them (here and in the migration) write them, so that a query that
# writes them the same can use those indexes: the condition of a partial index, and the key of
# the upload a job record names (NULL for other kinds).
REPUBLISHED = text("publications > 0")


class _UploadKey(ColumnElement[str]):
    """`payload`'s "key", written out as each database's own expression index has it (a bound
    JSON path, as SQLAlchemy's own accessor sends, would not match the index)."""

    type = String()
    inherit_cache = True


@compiles(_UploadKey)
def _upload_key(element: _UploadKey, compiler: SQLCompiler, **kw: Any) -> str:
    return "(payload ->> 'key'::text)"


@compiles(_UploadKey, "sqlite")
def _upload_key_sqlite(element: _UploadKey, compiler: SQLCompiler, **kw: Any) -> str:
    return "json_extract(payload, '$.key')"


UPLOAD_KEY = _UploadKey()


class Outcome(StrEnum):
    """How one attempt of a job ended."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"  # failed, and runs again after a delay
    POSTPONED = "postponed"  # held back before it did anything; not counted as an attempt
    FAILED = "failed"
    LOST = "lost"  # its worker stopped reporting, and another run took the job over
    CANCELLED = "cancelled"


class Signup(Base):
    __tablename__ = "signups"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    # What each index serves (each costs every write of its columns, so they are few):
    __table_args__ = (
        # the cleanup's expired jobs, the chart's last hour
        Index("ix_jobs_status_finished_at", "status", "finished_at"),
        # the reconciler's stuck jobs, the oldest queued job
        Index("ix_jobs_status_due_at", "status", "due_at"),
        # the latest jobs, unfiltered
        Index("ix_jobs_created_at", "created_at"),
        # the latest jobs of a kind, a status or both
        Index("ix_jobs_kind_status_created_at", "kind", "status", "created_at"),
        # when each kind last finished, its latest durations
        Index("ix_jobs_kind_finished_at", "kind", "finished_at"),
        # the jobs published again, few: their sum
        Index(
            "ix_jobs_publications",
            "publications",
            sqlite_where=REPUBLISHED,
            postgresql_where=REPUBLISHED,
        ),
        # the uploads records name, looked up by key for the orphan sweep (not partial: SQLite
        # would rather read every file job through another index that matches the condition)
        Index("ix_jobs_upload_key", UPLOAD_KEY),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    signup_id: Mapped[int | None] = mapped_column(ForeignKey("signups.id", ondelete="CASCADE"))
    # Runs that counted, since the job was recorded or last retried by hand.
    attempts: Mapped[int] = mapped_column(default=0)
    # Grows by one with every claim, never goes back: a run's writes name it, and a write from a
    # run that is no longer the job's current one changes nothing.
    fence: Mapped[int] = mapped_column(default=0)
    progress: Mapped[float] = mapped_column(default=0.0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The last error in full (the dashboard's), and a summary safe to show to anyone.
    error: Mapped[str | None] = mapped_column(Text)
    error_summary: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When it should start: when it was recorded or last published, or when its retry is due.
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # How often it was published again because its message seemed lost.
    publications: Mapped[int] = mapped_column(default=0)
    # The W3C trace context of the request that asked for it, so every run joins that trace.
    trace_context: Mapped[dict[str, str] | None] = mapped_column(JSON)


class JobCount(Base):
    """The number of jobs of each kind and status is the sum of these rows' changes.

    Triggers on `jobs` (made by the migration) add a row for every job recorded or deleted and
    every change of status, in the same transaction: rows are only ever added, so writers never
    wait for each other. The reconciler adds them up every minute (`maintenance.sum_counts`), so
    the figures are read from a few dozen rows however many job records there are.
    """

    __tablename__ = "job_counts"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    change: Mapped[int] = mapped_column()


class Attempt(Base):
    """One run of a job: when and where it ran, and how it ended."""

    __tablename__ = "job_attempts"
    __table_args__ = (UniqueConstraint("job_id", "fence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    fence: Mapped[int] = mapped_column()
    number: Mapped[int] = mapped_column()  # the job's attempt count when it started
    worker: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))
    delay: Mapped[float | None] = mapped_column()  # seconds until the next run, if retrying
    error: Mapped[str | None] = mapped_column(Text)


class IdempotencyKey(Base):
    """A request made with an `Idempotency-Key`: what it asked for, and what it was answered."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    route: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the request
    status_code: Mapped[int | None] = mapped_column()  # None while the first request runs
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
