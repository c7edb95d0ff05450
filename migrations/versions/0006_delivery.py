"""delivery: a per-channel message sequence and client message ids for safe retries

Revision ID: 0006_delivery
Revises: 0005_key_backups
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006_delivery'
down_revision: str | None = '0005_key_backups'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('message_seq', SEQ, server_default='0', nullable=False))
    with op.batch_alter_table('channel_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel_seq', SEQ, nullable=True))
        batch_op.add_column(sa.Column('client_message_id', sa.String(length=64), nullable=True))
    # Existing messages are numbered in storage order within their channel, and each
    # channel's counter continues from its last number (correlated subqueries: the same
    # statement on SQLite and PostgreSQL).
    op.execute(
        'UPDATE channel_messages SET channel_seq = ('
        'SELECT count(*) FROM channel_messages AS m '
        'WHERE m.channel_id = channel_messages.channel_id AND m.seq <= channel_messages.seq)'
    )
    op.execute(
        'UPDATE channels SET message_seq = ('
        'SELECT coalesce(max(m.channel_seq), 0) FROM channel_messages AS m '
        'WHERE m.channel_id = channels.id)'
    )
    with op.batch_alter_table('channel_messages', schema=None) as batch_op:
        batch_op.create_index(
            'uq_channel_messages_sender_client_id', ['sender_id', 'client_message_id'], unique=True
        )
        batch_op.create_index(
            'uq_channel_messages_channel_channel_seq', ['channel_id', 'channel_seq'], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table('channel_messages', schema=None) as batch_op:
        batch_op.drop_index('uq_channel_messages_channel_channel_seq')
        batch_op.drop_index('uq_channel_messages_sender_client_id')
        batch_op.drop_column('client_message_id')
        batch_op.drop_column('channel_seq')
    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.drop_column('message_seq')
