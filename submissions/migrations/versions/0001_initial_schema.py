"""Initial schema: users, teams, challenges and phases, datasets, submissions, evaluations
with their status history and per-case results, API tokens and the append-only audit log.

Revision ID: 0001
Revises: 
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa
import iugc.submissions.models


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('challenges',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=255), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('definition_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', iugc.submissions.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_challenges')),
    sa.UniqueConstraint('name', name=op.f('uq_challenges_name'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('role', sa.Enum('organizer', 'participant', name='role', native_enum=False, length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', iugc.submissions.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=12), nullable=False),
    sa.Column('created_at', iugc.submissions.models.UTCDateTime(), nullable=False),
    sa.Column('last_used_at', iugc.submissions.models.UTCDateTime(), nullable=True),
    sa.Column('revoked_at', iugc.submissions.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_api_tokens_token_sha256'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', iugc.submissions.models.UTCDateTime(), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=128), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_audit_log_actor_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_table('phases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('challenge_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('slug', sa.String(length=130), nullable=False),
    sa.Column('title', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('opens_at', iugc.submissions.models.UTCDateTime(), nullable=True),
    sa.Column('closes_at', iugc.submissions.models.UTCDateTime(), nullable=True),
    sa.Column('submissions_per_day', sa.Integer(), nullable=False),
    sa.Column('submissions_total', sa.Integer(), nullable=True),
    sa.Column('failures_count', sa.Boolean(), nullable=False),
    sa.Column('logs_visible', sa.Boolean(), nullable=False),
    sa.Column('public_cases', sa.Boolean(), nullable=False),
    sa.Column('limits', sa.JSON(), nullable=False),
    sa.Column('results_published', sa.Boolean(), nullable=False),
    sa.Column('published_at', iugc.submissions.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['challenge_id'], ['challenges.id'], name=op.f('fk_phases_challenge_id_challenges')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_phases')),
    sa.UniqueConstraint('challenge_id', 'name', name=op.f('uq_phases_challenge_id')),
    sa.UniqueConstraint('slug', name=op.f('uq_phases_slug'))
    )
    op.create_table('teams',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('challenge_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('created_at', iugc.submissions.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['challenge_id'], ['challenges.id'], name=op.f('fk_teams_challenge_id_challenges')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_teams')),
    sa.UniqueConstraint('challenge_id', 'name', name=op.f('uq_teams_challenge_id'))
    )
    op.create_table('datasets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('phase_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('manifest_sha256', sa.String(length=64), nullable=False),
    sa.Column('n_cases', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('registered_by_id', sa.Integer(), nullable=True),
    sa.Column('registered_at', iugc.submissions.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['phase_id'], ['phases.id'], name=op.f('fk_datasets_phase_id_phases')),
    sa.ForeignKeyConstraint(['registered_by_id'], ['users.id'], name=op.f('fk_datasets_registered_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets'))
    )
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_datasets_phase_id'), ['phase_id'], unique=False)

    op.create_table('memberships',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('challenge_id', sa.Integer(), nullable=False),
    sa.Column('joined_at', iugc.submissions.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['challenge_id'], ['challenges.id'], name=op.f('fk_memberships_challenge_id_challenges')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_memberships_team_id_teams')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_memberships_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_memberships')),
    sa.UniqueConstraint('user_id', 'challenge_id', name=op.f('uq_memberships_user_id'))
    )
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_memberships_team_id'), ['team_id'], unique=False)

    op.create_table('submissions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('phase_id', sa.Integer(), nullable=False),
    sa.Column('uploader_id', sa.Integer(), nullable=False),
    sa.Column('archive_sha256', sa.String(length=64), nullable=False),
    sa.Column('archive_size', sa.BigInteger(), nullable=False),
    sa.Column('image_digest', sa.String(length=80), nullable=True),
    sa.Column('status', sa.Enum('received', 'validating', 'queued', 'running', 'succeeded', 'failed', 'cancelled', name='state', native_enum=False, length=16), nullable=False),
    sa.Column('counts_against_quota', sa.Boolean(), nullable=False),
    sa.Column('created_at', iugc.submissions.models.UTCDateTime(), nullable=False),
    sa.Column('result_evaluation_id', sa.Integer(), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['phase_id'], ['phases.id'], name=op.f('fk_submissions_phase_id_phases')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_submissions_team_id_teams')),
    sa.ForeignKeyConstraint(['uploader_id'], ['users.id'], name=op.f('fk_submissions_uploader_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_submissions')),
    sa.UniqueConstraint('phase_id', 'team_id', 'archive_sha256', name=op.f('uq_submissions_phase_id'))
    )
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_submissions_phase_id'), ['phase_id'], unique=False)
        batch_op.create_index('ix_submissions_team_phase_created', ['team_id', 'phase_id', 'created_at'], unique=False)
        batch_op.create_index('ix_submissions_phase_team_score', ['phase_id', 'team_id', 'score'], unique=False)

    op.create_table('evaluations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('submission_id', sa.Integer(), nullable=False),
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('received', 'validating', 'queued', 'running', 'succeeded', 'failed', 'cancelled', name='state', native_enum=False, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('failure', sa.String(length=32), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('platform_fault', sa.Boolean(), nullable=False),
    sa.Column('log_tail', sa.Text(), nullable=True),
    sa.Column('image_digest', sa.String(length=80), nullable=True),
    sa.Column('evaluator_version', sa.String(length=64), nullable=True),
    sa.Column('definition_sha256', sa.String(length=64), nullable=True),
    sa.Column('manifest_sha256', sa.String(length=64), nullable=True),
    sa.Column('dataset_id', sa.Integer(), nullable=True),
    sa.Column('limits', sa.JSON(), nullable=True),
    sa.Column('worker_host', sa.String(length=255), nullable=True),
    sa.Column('worker_id', sa.String(length=300), nullable=True),
    sa.Column('heartbeat_at', iugc.submissions.models.UTCDateTime(), nullable=True),
    sa.Column('created_at', iugc.submissions.models.UTCDateTime(), nullable=False),
    sa.Column('queued_at', iugc.submissions.models.UTCDateTime(), nullable=True),
    sa.Column('started_at', iugc.submissions.models.UTCDateTime(), nullable=True),
    sa.Column('finished_at', iugc.submissions.models.UTCDateTime(), nullable=True),
    sa.Column('aggregates', sa.JSON(), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('result_key', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_evaluations_dataset_id_datasets')),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_evaluations_submission_id_submissions')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_evaluations_team_id_teams')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluations')),
    sa.UniqueConstraint('submission_id', 'number', name=op.f('uq_evaluations_submission_id'))
    )
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.create_index('ix_evaluations_status_id', ['status', 'id'], unique=False)
        batch_op.create_index('ix_evaluations_submission_status', ['submission_id', 'status', 'number'], unique=False)
        batch_op.create_index('uq_evaluations_one_running_per_team', ['team_id'], unique=True, sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))

    op.create_table('case_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('evaluation_id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.String(length=128), nullable=False),
    sa.Column('values', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['evaluation_id'], ['evaluations.id'], name=op.f('fk_case_results_evaluation_id_evaluations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_results')),
    sa.UniqueConstraint('evaluation_id', 'case_id', name=op.f('uq_case_results_evaluation_id'))
    )
    op.create_table('leaderboard_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('phase_id', sa.Integer(), nullable=False),
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('submission_id', sa.Integer(), nullable=False),
    sa.Column('evaluation_id', sa.Integer(), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['evaluation_id'], ['evaluations.id'], name=op.f('fk_leaderboard_entries_evaluation_id_evaluations')),
    sa.ForeignKeyConstraint(['phase_id'], ['phases.id'], name=op.f('fk_leaderboard_entries_phase_id_phases')),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_leaderboard_entries_submission_id_submissions')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_leaderboard_entries_team_id_teams')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_leaderboard_entries')),
    sa.UniqueConstraint('phase_id', 'team_id', name=op.f('uq_leaderboard_entries_phase_id'))
    )
    op.create_table('status_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('evaluation_id', sa.Integer(), nullable=False),
    sa.Column('from_state', sa.Enum('received', 'validating', 'queued', 'running', 'succeeded', 'failed', 'cancelled', name='state', native_enum=False, length=16), nullable=True),
    sa.Column('to_state', sa.Enum('received', 'validating', 'queued', 'running', 'succeeded', 'failed', 'cancelled', name='state', native_enum=False, length=16), nullable=False),
    sa.Column('at', iugc.submissions.models.UTCDateTime(), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_status_changes_actor_id_users')),
    sa.ForeignKeyConstraint(['evaluation_id'], ['evaluations.id'], name=op.f('fk_status_changes_evaluation_id_evaluations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_status_changes'))
    )
    with op.batch_alter_table('status_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_status_changes_evaluation_id'), ['evaluation_id'], unique=False)


    # The audit log is append-only in the database itself, not only through the ORM.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
    else:
        for what in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{what.lower()} BEFORE {what} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_append_only()")
    else:
        op.execute("DROP TRIGGER audit_log_no_update")
        op.execute("DROP TRIGGER audit_log_no_delete")
    with op.batch_alter_table('status_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_status_changes_evaluation_id'))

    op.drop_table('status_changes')
    op.drop_table('leaderboard_entries')
    op.drop_table('case_results')
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_index('uq_evaluations_one_running_per_team', sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))
        batch_op.drop_index('ix_evaluations_submission_status')
        batch_op.drop_index('ix_evaluations_status_id')

    op.drop_table('evaluations')
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_index('ix_submissions_team_phase_created')
        batch_op.drop_index('ix_submissions_phase_team_score')
        batch_op.drop_index(batch_op.f('ix_submissions_phase_id'))

    op.drop_table('submissions')
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_memberships_team_id'))

    op.drop_table('memberships')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_datasets_phase_id'))

    op.drop_table('datasets')
    op.drop_table('teams')
    op.drop_table('phases')
    op.drop_table('audit_log')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))

    op.drop_table('api_tokens')
    op.drop_table('users')
    op.drop_table('challenges')
