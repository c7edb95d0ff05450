"""administration: roles, bans, message tombstones, invites with uses, server log, settings

Revision ID: 0003_admin
Revises: 0001
Create Date: 2026-11-29
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003_admin'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_moderator', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('is_locked', sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table('channel_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deleted_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('deleted_by', sa.String(length=36), nullable=True))
        batch_op.create_index('ix_channel_messages_sender_id', ['sender_id'], unique=False)
        batch_op.create_index('ix_channel_messages_channel_deleted', ['channel_id', 'deleted_at'], unique=False)

    # Invites get an id (existing ones a fresh one), a use count and a revocation time.
    with op.batch_alter_table('invites', schema=None) as batch_op:
        batch_op.add_column(sa.Column('id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('max_uses', sa.Integer(), server_default=sa.text('1'), nullable=False))
        batch_op.add_column(sa.Column('uses', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch_op.add_column(sa.Column('revoked_at', sa.DateTime(), nullable=True))
    invites = sa.table('invites', sa.column('token_hash', sa.String), sa.column('id', sa.String),
                       sa.column('uses', sa.Integer), sa.column('consumed_at', sa.DateTime))
    bind = op.get_bind()
    for (token_hash,) in bind.execute(sa.select(invites.c.token_hash)).all():
        bind.execute(sa.update(invites).where(invites.c.token_hash == token_hash)
                     .values(id=str(uuid.uuid4())))
    bind.execute(sa.update(invites).where(invites.c.consumed_at.is_not(None)).values(uses=1))
    with op.batch_alter_table('invites', schema=None) as batch_op:
        batch_op.alter_column('id', existing_type=sa.String(length=36), nullable=False)
        batch_op.create_unique_constraint(batch_op.f('uq_invites_id'), ['id'])

    op.create_table('bans',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=True),
    sa.Column('address', sa.String(length=64), nullable=True),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_bans_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bans'))
    )
    with op.batch_alter_table('bans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bans_user_id'), ['user_id'], unique=False)

    op.create_table('server_log',
    sa.Column('id', SEQ, autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('topic', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=True),
    sa.Column('device_id', sa.String(length=36), nullable=True),
    sa.Column('actor_id', sa.String(length=36), nullable=True),
    sa.Column('address', sa.String(length=64), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_server_log'))
    )
    with op.batch_alter_table('server_log', schema=None) as batch_op:
        batch_op.create_index('ix_server_log_topic_id', ['topic', 'id'], unique=False)
        batch_op.create_index('ix_server_log_user_id', ['user_id'], unique=False)
        batch_op.create_index('ix_server_log_at', ['at'], unique=False)

    op.create_table('server_settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_server_settings'))
    )


def downgrade() -> None:
    op.drop_table('server_settings')
    with op.batch_alter_table('server_log', schema=None) as batch_op:
        batch_op.drop_index('ix_server_log_at')
        batch_op.drop_index('ix_server_log_user_id')
        batch_op.drop_index('ix_server_log_topic_id')
    op.drop_table('server_log')
    with op.batch_alter_table('bans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bans_user_id'))
    op.drop_table('bans')
    with op.batch_alter_table('invites', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_invites_id'), type_='unique')
        batch_op.drop_column('revoked_at')
        batch_op.drop_column('uses')
        batch_op.drop_column('max_uses')
        batch_op.drop_column('id')
    with op.batch_alter_table('channel_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_channel_messages_channel_deleted')
        batch_op.drop_index('ix_channel_messages_sender_id')
        batch_op.drop_column('deleted_by')
        batch_op.drop_column('deleted_at')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('is_locked')
        batch_op.drop_column('is_moderator')
