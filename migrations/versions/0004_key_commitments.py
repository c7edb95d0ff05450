"""key commitments on channels; one key envelope per sender device (issue 15)

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

    # Envelopes: one per sender device (and, for channels, per key version). Existing
    # rows become version 1; the sender's user is taken from its device while it exists.
    with op.batch_alter_table('channel_key_envelopes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_version', sa.Integer(), server_default=sa.text('1'), nullable=False))
        batch_op.add_column(sa.Column('sender_user_id', sa.String(length=36), nullable=True))
        batch_op.drop_constraint('pk_channel_key_envelopes', type_='primary')
        batch_op.create_primary_key('pk_channel_key_envelopes', ['channel_id', 'device_id', 'sender_device_id', 'key_version'])
    with op.batch_alter_table('directory_key_envelopes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sender_user_id', sa.String(length=36), nullable=True))
        batch_op.drop_constraint('pk_directory_key_envelopes', type_='primary')
        batch_op.create_primary_key('pk_directory_key_envelopes', ['device_id', 'sender_device_id'])
    for name in ('channel_key_envelopes', 'directory_key_envelopes'):
        op.execute(
            f'UPDATE {name} SET sender_user_id = '
            f'(SELECT devices.user_id FROM devices WHERE devices.id = {name}.sender_device_id)'
        )


def downgrade() -> None:
    # Back to one envelope per recipient: keep the one the default read answered
    # (an admin's or the channel creator's, then the recipient's own user's, then the
    # newest), of the current key version only.
    _keep_preferred()
    with op.batch_alter_table('directory_key_envelopes', schema=None) as batch_op:
        batch_op.drop_constraint('pk_directory_key_envelopes', type_='primary')
        batch_op.create_primary_key('pk_directory_key_envelopes', ['device_id'])
        batch_op.drop_column('sender_user_id')
    with op.batch_alter_table('channel_key_envelopes', schema=None) as batch_op:
        batch_op.drop_constraint('pk_channel_key_envelopes', type_='primary')
        batch_op.create_primary_key('pk_channel_key_envelopes', ['channel_id', 'device_id'])
        batch_op.drop_column('sender_user_id')
        batch_op.drop_column('key_version')
    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.drop_column('key_version')
        batch_op.drop_column('key_commitment')


def _keep_preferred() -> None:
    bind = op.get_bind()
    channel = sa.table('channel_key_envelopes', sa.column('channel_id', sa.String),
                       sa.column('device_id', sa.String), sa.column('sender_device_id', sa.String),
                       sa.column('key_version', sa.Integer), sa.column('sender_user_id', sa.String),
                       sa.column('created_at', sa.DateTime))
    directory = sa.table('directory_key_envelopes', sa.column('device_id', sa.String),
                         sa.column('sender_device_id', sa.String),
                         sa.column('sender_user_id', sa.String), sa.column('created_at', sa.DateTime))
    channels = sa.table('channels', sa.column('id', sa.String), sa.column('created_by', sa.String),
                        sa.column('key_version', sa.Integer))
    users = sa.table('users', sa.column('id', sa.String), sa.column('is_admin', sa.Boolean))
    devices = sa.table('devices', sa.column('id', sa.String), sa.column('user_id', sa.String))
    admins = {row[0] for row in bind.execute(sa.select(users.c.id).where(users.c.is_admin))}
    owners = dict(bind.execute(sa.select(devices.c.id, devices.c.user_id)).all())
    creators = {row[0]: (row[1], row[2]) for row in bind.execute(
        sa.select(channels.c.id, channels.c.created_by, channels.c.key_version))}

    def rank(sender: str | None, recipient: str, creator: str | None) -> int:
        if sender is not None and (sender in admins or sender == creator):
            return 0
        return 1 if sender is not None and sender == owners.get(recipient) else 2

    best: dict[tuple[str, str], tuple[int, float, str, int]] = {}
    for c, d, s, v, u, at in bind.execute(sa.select(channel)).all():
        creator, current = creators.get(c, (None, 1))
        if v != current:
            continue
        candidate = (rank(u, d, creator), -at.timestamp(), s, v)
        if (c, d) not in best or candidate < best[(c, d)]:
            best[(c, d)] = candidate
    for c, d, s, v, _u, _at in bind.execute(sa.select(channel)).all():
        chosen = best.get((c, d))
        if chosen is None or (s, v) != (chosen[2], chosen[3]):
            bind.execute(sa.delete(channel).where(
                channel.c.channel_id == c, channel.c.device_id == d,
                channel.c.sender_device_id == s, channel.c.key_version == v))
    kept: dict[str, tuple[int, float, str]] = {}
    for d, s, u, at in bind.execute(sa.select(directory)).all():
        candidate = (rank(u, d, None), -at.timestamp(), s)
        if d not in kept or candidate < kept[d]:
            kept[d] = candidate
    for d, s, _u, _at in bind.execute(sa.select(directory)).all():
        if kept[d][2] != s:
            bind.execute(sa.delete(directory).where(
                directory.c.device_id == d, directory.c.sender_device_id == s))
