"""A team accepts its challenge's terms once, before its first submission: when, and by
which member.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa

from iugc.submissions.models import UTCDateTime


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('teams', schema=None) as batch_op:
        batch_op.add_column(sa.Column('terms_accepted_at', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('terms_accepted_by_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_teams_terms_accepted_by_id_users'), 'users', ['terms_accepted_by_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('teams', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_teams_terms_accepted_by_id_users'), type_='foreignkey')
        batch_op.drop_column('terms_accepted_by_id')
        batch_op.drop_column('terms_accepted_at')
