"""key commitments on channels (issue 15)

Revision ID: 0004_key_commitments
Revises: 0003_admin
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004_key_commitments'
down_revision: str | None = '0003_admin'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing channels: version 1, no commitment (their creator or an admin sets it once).
    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_commitment', sa.String(length=44), nullable=True))
        batch_op.add_column(sa.Column('key_version', sa.Integer(), server_default=sa.text('1'), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.drop_column('key_version')
        batch_op.drop_column('key_commitment')
