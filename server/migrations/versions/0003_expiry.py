"""Output retention: when a completed job's files are removed (OpenAI's ``expires_at``).

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("expires_at", sa.BigInteger))
    op.create_index("jobs_expiry", "jobs", ["status", "expires_at"])
