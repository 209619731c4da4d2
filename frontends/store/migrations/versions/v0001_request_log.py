"""The request log: one row per request, indexed for the usage queries.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_log",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_byte_at", sa.DateTime(timezone=True)),
        sa.Column("done_at", sa.DateTime(timezone=True)),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("streamed", sa.Boolean, nullable=False),
        sa.Column("username", sa.Text),
        sa.Column("identity_provider", sa.Text),
        sa.Column("cluster", sa.Text),
        sa.Column("framework", sa.Text),
        sa.Column("model", sa.Text),
        sa.Column("endpoint_slug", sa.Text),
        sa.Column("error_code", sa.Text),
        sa.Column("backend_task_id", sa.Text),
        sa.Column("prompt_tokens", sa.BigInteger),
        sa.Column("completion_tokens", sa.BigInteger),
        sa.Column("total_tokens", sa.BigInteger),
        sa.Column("tokens_estimated", sa.Boolean, nullable=False),
        sa.Column("bytes_in", sa.BigInteger, nullable=False),
        sa.Column("bytes_out", sa.BigInteger, nullable=False),
        sa.Column("client_address", sa.Text),
        sa.Column("prompt", sa.Text),
        sa.Column("response", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_request_log"),
        sa.CheckConstraint("status BETWEEN 100 AND 599", name="ck_request_log_status"),
        sa.CheckConstraint(
            "prompt_tokens >= 0 AND completion_tokens >= 0 AND total_tokens >= 0"
            " AND bytes_in >= 0 AND bytes_out >= 0",
            name="ck_request_log_counts",
        ),
    )
    op.create_index(
        "ix_request_log_username_received_at", "request_log", ["username", "received_at"]
    )
    op.create_index("ix_request_log_model_received_at", "request_log", ["model", "received_at"])
    op.create_index("ix_request_log_received_at", "request_log", ["received_at"])


def downgrade() -> None:
    op.drop_table("request_log")
