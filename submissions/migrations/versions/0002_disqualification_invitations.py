"""Disqualification of teams and submissions (a reason and a time, cleared when an
organizer reinstates them) and invitations to a team by e-mail address.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa
import iugc.submissions.models


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('teams', 'submissions'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('disqualified_at', iugc.submissions.models.UTCDateTime(), nullable=True))
            batch_op.add_column(sa.Column('disqualified_reason', sa.Text(), nullable=True))
    op.create_table('invitations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('invited_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', iugc.submissions.models.UTCDateTime(), nullable=False),
    sa.Column('expires_at', iugc.submissions.models.UTCDateTime(), nullable=False),
    sa.Column('used_at', iugc.submissions.models.UTCDateTime(), nullable=True),
    sa.Column('used_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['invited_by_id'], ['users.id'], name=op.f('fk_invitations_invited_by_id_users')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_invitations_team_id_teams')),
    sa.ForeignKeyConstraint(['used_by_id'], ['users.id'], name=op.f('fk_invitations_used_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invitations')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_invitations_token_sha256'))
    )
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_invitations_team_id'), ['team_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_invitations_team_id'))
    op.drop_table('invitations')
    for table in ('submissions', 'teams'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('disqualified_reason')
            batch_op.drop_column('disqualified_at')
