"""key backups: one client-encrypted blob of keys per user, versioned for compare-and-swap

Revision ID: 0005_key_backups
Revises: 0004_key_commitments
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005_key_backups'
down_revision: str | None = '0004_key_commitments'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('key_backups',
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('backup', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_key_backups_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_key_backups'))
    )


def downgrade() -> None:
    op.drop_table('key_backups')
