"""What SGLang's clients read of a job, and who waits for an image job.

``requested_model``: the model name the request gave (echoed back; None: it gave none).
``inference_time_s`` / ``peak_memory_mb``: how long the job's generation took and the GPU memory peak.
``origin``: the replica whose HTTP thread waits for a synchronous (image) job; when it is gone,
no client can receive the result and the job is not run.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("requested_model", sa.Text))
        batch.add_column(sa.Column("inference_time_s", sa.Float))
        batch.add_column(sa.Column("peak_memory_mb", sa.Float))
        batch.add_column(sa.Column("origin", sa.Text))
