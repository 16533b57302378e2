"""When each job is due, and how often it was published again, so that stuck jobs are found.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from {{ cookiecutter.package_name }}.database import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("due_at", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("publications", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute("UPDATE jobs SET due_at = created_at")
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("due_at", existing_type=UTCDateTime(), nullable=False)
        batch.alter_column("publications", existing_type=sa.Integer(), server_default=None)
    op.create_index("ix_jobs_status_due_at", "jobs", ["status", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_status_due_at", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("publications")
        batch.drop_column("due_at")
