"""The request log says whether the client left before the end, and why a request failed.

`cancelled`: the client went away before the answer was complete (a stream it abandoned).
`detail`: the core's account of a failure, for the operator (it may quote a backend's
error, redacted of secrets), capped at `DETAIL_LIMIT` characters by the record.  Rows
written before this migration read as not cancelled, with no detail.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("request_log") as table:
        table.add_column(
            sa.Column("cancelled", sa.Boolean, nullable=False, server_default=sa.false())
        )
        table.add_column(sa.Column("detail", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("request_log") as table:
        table.drop_column("detail")
        table.drop_column("cancelled")
