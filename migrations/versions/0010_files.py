"""files: uploaded (encrypted) files, attachments on messages, channel images

Revision ID: 0010_files
Revises: 0009_key_versions
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010_files'
down_revision: str | None = '0009_key_versions'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'files',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('channel_id', sa.String(length=36), nullable=False),
        sa.Column('uploader_id', sa.String(length=36), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('storage_key', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('message_id', sa.String(length=36), nullable=True),
        sa.Column('position', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ['channel_id'], ['channels.id'],
            name=op.f('fk_files_channel_id_channels'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_files')),
    )
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.create_index('ix_files_message_id', ['message_id'], unique=False)
        batch_op.create_index('ix_files_uploader_id', ['uploader_id'], unique=False)
        batch_op.create_index(
            'ix_files_unclaimed_created', ['message_id', 'created_at'], unique=False
        )
    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('image_file_id', sa.String(length=36), nullable=True))
    with op.batch_alter_table('channel_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attachments', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('channel_messages', schema=None) as batch_op:
        batch_op.drop_column('attachments')
    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.drop_column('image_file_id')
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index('ix_files_unclaimed_created')
        batch_op.drop_index('ix_files_uploader_id')
        batch_op.drop_index('ix_files_message_id')
    op.drop_table('files')
