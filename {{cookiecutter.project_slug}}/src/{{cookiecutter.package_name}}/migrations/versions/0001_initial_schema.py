"""The schema: signups, their jobs and counts, each attempt of a job, and idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from {{ cookiecutter.package_name }}.database import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signups",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column(
            "signup_id",
            sa.Integer(),
            sa.ForeignKey("signups.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("fence", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Double(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_summary", sa.String(300), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("publications", sa.Integer(), nullable=False),
        sa.Column("trace_context", sa.JSON(), nullable=True),
    )
    op.create_index("ix_jobs_status_finished_at", "jobs", ["status", "finished_at"])
    op.create_index("ix_jobs_status_due_at", "jobs", ["status", "due_at"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_index("ix_jobs_kind_status_created_at", "jobs", ["kind", "status", "created_at"])
    op.create_index("ix_jobs_kind_finished_at", "jobs", ["kind", "finished_at"])
    republished = sa.text("publications > 0")
    op.create_index(
        "ix_jobs_publications",
        "jobs",
        ["publications"],
        sqlite_where=republished,
        postgresql_where=republished,
    )
    upload_key = sa.text(_UPLOAD_KEY[op.get_bind().dialect.name])
    op.create_index("ix_jobs_upload_key", "jobs", [upload_key])
    op.create_table(
        "job_counts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("change", sa.Integer(), nullable=False),
    )
    for statement in _COUNTING[op.get_bind().dialect.name]:
        op.execute(statement)
    op.create_table(
        "job_attempts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "job_id",
            sa.String(36),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("fence", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("delay", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("job_id", "fence"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("route", sa.String(64), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("job_attempts")
    op.drop_table("job_counts")
    op.drop_table("jobs")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS count_jobs()")
    op.drop_table("signups")


# The key of the upload a job names (models.UPLOAD_KEY).
_UPLOAD_KEY = {
    "sqlite": "json_extract(payload, '$.key')",
    "postgresql": "(payload ->> 'key'::text)",
}

# Every job recorded, deleted or changing status adds rows to job_counts, in its transaction.
_COUNTING = {
    "sqlite": [
        """CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs BEGIN
            INSERT INTO job_counts (kind, status, change) VALUES (NEW.kind, NEW.status, 1);
        END""",
        """CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs BEGIN
            INSERT INTO job_counts (kind, status, change) VALUES (OLD.kind, OLD.status, -1);
        END""",
        """CREATE TRIGGER jobs_counted_update AFTER UPDATE OF kind, status ON jobs
        WHEN OLD.kind IS NOT NEW.kind OR OLD.status IS NOT NEW.status BEGIN
            INSERT INTO job_counts (kind, status, change)
            VALUES (OLD.kind, OLD.status, -1), (NEW.kind, NEW.status, 1);
        END""",
    ],
    "postgresql": [
        """CREATE OR REPLACE FUNCTION count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' THEN
                INSERT INTO job_counts (kind, status, change) VALUES (OLD.kind, OLD.status, -1);
            END IF;
            IF TG_OP <> 'DELETE' THEN
                INSERT INTO job_counts (kind, status, change) VALUES (NEW.kind, NEW.status, 1);
            END IF;
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER jobs_counted AFTER INSERT OR DELETE ON jobs
        FOR EACH ROW EXECUTE FUNCTION count_jobs()""",
        """CREATE TRIGGER jobs_counted_update AFTER UPDATE OF kind, status ON jobs FOR EACH ROW
        WHEN (OLD.kind IS DISTINCT FROM NEW.kind OR OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION count_jobs()""",
    ],
}
