"""Replicas sharing one store: who runs a job and until when (its lease), its batch key, and the live replicas.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("worker", sa.Text))
        batch.add_column(sa.Column("lease_until", sa.Float))
        batch.add_column(sa.Column("batch_key", sa.Text))
    op.create_index("jobs_model_status", "jobs", ["model", "status", "seq"])
    op.create_table(
        "replicas",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("draining", sa.Boolean, nullable=False, server_default=sa.false()),
    )
