"""key rotation: the commitments of earlier channel key versions

Revision ID: 0009_key_versions
Revises: 0008_private_rooms
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0009_key_versions'
down_revision: str | None = '0008_private_rooms'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'channel_key_versions',
        sa.Column('channel_id', sa.String(length=36), nullable=False),
        sa.Column('key_version', sa.Integer(), nullable=False),
        sa.Column('key_commitment', sa.String(length=44), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ['channel_id'], ['channels.id'],
            name=op.f('fk_channel_key_versions_channel_id_channels'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint(
            'channel_id', 'key_version', name=op.f('pk_channel_key_versions')
        ),
    )


def downgrade() -> None:
    op.drop_table('channel_key_versions')
