"""health probe: a row per node that GET /health/ready rewrites to prove it can store

Revision ID: 0007_health_probe
Revises: 0006_delivery
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007_health_probe'
down_revision: str | None = '0006_delivery'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'health_probes',
        sa.Column('node', sa.String(length=64), nullable=False),
        sa.Column('checked_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('node', name=op.f('pk_health_probes')),
    )


def downgrade() -> None:
    op.drop_table('health_probes')
