"""What a team sets on its submissions: a short method description with an optional link
(shown on the leaderboard row) and which scored submission counts in the phase.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa

from iugc.submissions.models import UTCDateTime


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('description', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('description_url', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('chosen_at', UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_column('chosen_at')
        batch_op.drop_column('description_url')
        batch_op.drop_column('description')
