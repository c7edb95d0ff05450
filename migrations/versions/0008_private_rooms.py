"""private rooms: channel members, direct-message rooms, blocks, preferences, key versions
on messages

Revision ID: 0008_private_rooms
Revises: 0007_health_probe
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008_private_rooms'
down_revision: str | None = '0007_health_probe'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'channel_members',
        sa.Column('channel_id', sa.String(length=36), nullable=False),
        sa.Column('user_id', sa.String(length=36), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('added_at', sa.DateTime(), nullable=False),
        sa.Column('added_by', sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ['channel_id'], ['channels.id'],
            name=op.f('fk_channel_members_channel_id_channels'), ondelete='CASCADE',
        ),
        sa.ForeignKeyConstraint(
            ['user_id'], ['users.id'],
            name=op.f('fk_channel_members_user_id_users'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('channel_id', 'user_id', name=op.f('pk_channel_members')),
    )
    with op.batch_alter_table('channel_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_channel_members_user_id'), ['user_id'], unique=False)

    op.create_table(
        'user_blocks',
        sa.Column('blocker_id', sa.String(length=36), nullable=False),
        sa.Column('blocked_id', sa.String(length=36), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ['blocked_id'], ['users.id'],
            name=op.f('fk_user_blocks_blocked_id_users'), ondelete='CASCADE',
        ),
        sa.ForeignKeyConstraint(
            ['blocker_id'], ['users.id'],
            name=op.f('fk_user_blocks_blocker_id_users'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('blocker_id', 'blocked_id', name=op.f('pk_user_blocks')),
    )
    with op.batch_alter_table('user_blocks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_blocks_blocked_id'), ['blocked_id'], unique=False)

    op.create_table(
        'user_preferences',
        sa.Column('user_id', sa.String(length=36), nullable=False),
        sa.Column(
            'direct_messages', sa.String(length=16), server_default='anyone', nullable=False
        ),
        sa.ForeignKeyConstraint(
            ['user_id'], ['users.id'],
            name=op.f('fk_user_preferences_user_id_users'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('user_id', name=op.f('pk_user_preferences')),
    )
    with op.batch_alter_table('channel_messages', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('key_version', sa.Integer(), server_default=sa.text('1'), nullable=False)
        )
    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('private', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column('direct_key', sa.String(length=73), nullable=True))
        batch_op.add_column(
            sa.Column('rekey_required', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_unique_constraint(batch_op.f('uq_channels_direct_key'), ['direct_key'])


def downgrade() -> None:
    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_channels_direct_key'), type_='unique')
        batch_op.drop_column('rekey_required')
        batch_op.drop_column('direct_key')
        batch_op.drop_column('private')
    with op.batch_alter_table('channel_messages', schema=None) as batch_op:
        batch_op.drop_column('key_version')
    op.drop_table('user_preferences')
    with op.batch_alter_table('user_blocks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_blocks_blocked_id'))
    op.drop_table('user_blocks')
    with op.batch_alter_table('channel_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_channel_members_user_id'))
    op.drop_table('channel_members')
