"""Files and batches: OpenAI's files (content kept in the database), batches with the
seed system's BatchLog fields, and each batch line's outcome, so a batch resumes after a
restart without running a finished line again.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def _when(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        _when("created_at", nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_files"),
    )
    op.create_index("ix_files_owner_created_at", "files", ["owner", "created_at"])
    op.create_table(
        "batches",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("access_log_id", sa.Text),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("input_file", sa.Text, nullable=False),
        sa.Column("output_folder_path", sa.Text),
        sa.Column("cluster", sa.Text, nullable=False),
        sa.Column("framework", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("globus_batch_uuid", sa.Text),
        sa.Column("task_ids", sa.Text),
        sa.Column("result", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        _when("in_progress_at"),
        _when("completed_at"),
        _when("failed_at"),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("endpoint_slug", sa.Text, nullable=False),
        sa.Column("completion_window", sa.Text, nullable=False),
        sa.Column("metadata", sa.JSON),
        sa.Column("identity", sa.JSON, nullable=False),
        sa.Column("input_file_id", sa.Text, nullable=False),
        sa.Column("output_file_id", sa.Text),
        sa.Column("error_file_id", sa.Text),
        _when("created_at", nullable=False),
        _when("expires_at", nullable=False),
        _when("cancelling_at"),
        _when("cancelled_at"),
        _when("finalizing_at"),
        _when("expired_at"),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("completed", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("lease_holder", sa.Text),
        _when("lease_expires_at"),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
    )
    op.create_index("ix_batches_user_id_created_at", "batches", ["user_id", "created_at"])
    op.create_index("ix_batches_status", "batches", ["status"])
    op.create_table(
        "batch_lines",
        sa.Column("batch_id", sa.Text, nullable=False),
        sa.Column("line_index", sa.Integer, nullable=False),
        sa.Column("custom_id", sa.Text, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("code", sa.Text),
        sa.Column("request_id", sa.Text),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "line_index", name="pk_batch_lines"),
    )


def downgrade() -> None:
    op.drop_table("batch_lines")
    op.drop_table("batches")
    op.drop_table("files")
