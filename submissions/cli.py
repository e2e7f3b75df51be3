"""``iugc db ...``: the service's database."""
from __future__ import annotations

from pathlib import Path

import click

from iugc.common.options import Number, ROW_ID, count


@click.group("db")
def db_group():
    """The service's database (IUGC_DATABASE_URL; default SQLite under IUGC_INSTANCE)."""


@db_group.command("upgrade")
def upgrade_cmd():
    """Create the schema or bring it to this version (Alembic migrations); safe to repeat.

    `iugc serve` and `iugc worker` refuse to start until this has been run.
    """
    from iugc.submissions import db
    from iugc.submissions.config import Settings
    from iugc.submissions.exceptions import ServiceError

    try:
        engine = db.make_engine(Settings.from_env().database_url)
        before, after = db.upgrade(engine)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    where = db.shown_url(engine)
    if before == after:
        click.echo(f"{where}: already at revision {after}")
    else:
        click.echo(f"{where}: upgraded from {before or 'an empty database'} to revision {after}")


def _service():
    """(settings, engine, sessions) of a database at the current schema, or a clear exit."""
    from iugc.submissions import db
    from iugc.submissions.config import Settings
    from iugc.submissions.exceptions import ServiceError

    settings = Settings.from_env()
    try:
        engine = db.make_engine(settings.database_url)
        db.require_current_schema(engine)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    return settings, engine, db.session_factory(engine)


def _run(operation):
    """Run ``operation(session)`` in one transaction; a service error exits with its message."""
    from iugc.submissions import db
    from iugc.submissions.exceptions import ServiceError

    _, engine, sessions = _service()
    try:
        with db.transaction(sessions) as session:
            return operation(session)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()


@click.group("admin")
def admin_group():
    """Organizer commands on the service's database (IUGC_DATABASE_URL, IUGC_INSTANCE).

    In order: `iugc db upgrade`, `admin init`, `admin add-dataset`, `admin create-user`,
    `admin token`; later `admin reevaluate` and `admin publish`.
    """


@admin_group.command("init")
@click.option("--challenge", "challenge_name", required=True, help="Shipped challenge name (psfhs2023, iugc2024) or a definition .yaml.")
def init_cmd(challenge_name):
    """Create a challenge and its phases from its definition (repeatable: changes nothing)."""
    from iugc.submissions import challenges

    def operation(session):
        challenge, created = challenges.init_challenge(session, challenge_name)
        return challenge.name, [p.slug for p in challenge.phases], created

    name, slugs, created = _run(operation)
    click.echo(f"{'created' if created else 'already there:'} challenge {name}; phases: {', '.join(slugs)}")


@admin_group.command("add-dataset")
@click.option("--phase", "slug", required=True, help="Phase slug, e.g. iugc2024-validation (see `admin init`'s output).")
@click.option("--data", "folder", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset folder from `iugc data import` (kept private).")
@click.option("--sha256", "expected", default=None, help="The sha256 manifest.json must have (`sha256sum DIR/manifest.json`); refused otherwise.")
def add_dataset_cmd(slug, folder, expected):
    """Register the hidden dataset a phase is evaluated on (replaces the previous one for new evaluations).

    The folder must pass `iugc data verify`; the site's /admin does the same.
    """
    from iugc.submissions import challenges

    def operation(session):
        dataset = challenges.add_dataset(session, slug, folder, expected_sha256=expected)
        return dataset.n_cases, dataset.manifest_sha256

    n, digest = _run(operation)
    click.echo(f"phase {slug}: dataset of {n} cases registered (manifest sha256 {digest[:12]})")


@admin_group.command("phase")
@click.option("--phase", "slug", required=True, help="Phase slug, e.g. iugc2024-validation.")
@click.option("--opens", default=None, help="When it opens, ISO 8601 (UTC when no zone), or `none`.")
@click.option("--closes", default=None, help="When it closes, ISO 8601 (UTC when no zone), or `none`.")
@click.option("--per-day", type=int, default=None, help="Submissions per team per rolling 24 hours (at least 1).")
@click.option("--total", default=None, help="Submissions per team in all (at least 1), or `none`.")
@click.option("--failures-count/--failures-free", default=None, help="Whether failures the submission caused use up quota.")
@click.option("--counts", type=click.Choice(["best", "last"]), default=None,
              help="Which scored submission counts for a team that chose none: its best-scoring or its latest.")
@click.option("--queue-without-worker/--refuse-without-worker", default=None,
              help="Whether an upload that no running worker can evaluate (say, the phase gives a GPU and no worker has "
                   "one) waits in the queue for one (workers started on demand) or is refused with the reason (the default).")
def phase_cmd(slug, opens, closes, per_day, total, failures_count, counts, queue_without_worker):
    """Change a phase's window, quotas, what counts and queueing (what is not given stays); the site's /admin does the same."""
    from iugc.submissions import challenges, counting
    from iugc.submissions.exceptions import InvalidRequest

    changes = {}
    try:
        if opens is not None:
            changes["opens_at"] = challenges.parse_time(opens)
        if closes is not None:
            changes["closes_at"] = challenges.parse_time(closes)
    except InvalidRequest as exc:
        raise click.BadParameter(str(exc), param_hint="--opens/--closes") from None
    if per_day is not None:
        changes["submissions_per_day"] = per_day
    if total is not None:
        if total.lower() != "none" and not total.isdigit():
            raise click.BadParameter(f"a whole number or `none`, got {total!r}", param_hint="--total")
        changes["submissions_total"] = None if total.lower() == "none" else int(total)
    if failures_count is not None:
        changes["failures_count"] = failures_count
    if queue_without_worker is not None:
        changes["queue_without_worker"] = queue_without_worker
    if not changes and counts is None:
        raise click.UsageError("nothing to change: give --opens, --closes, --per-day, --total, --failures-count/--failures-free, "
                               "--counts or --queue-without-worker/--refuse-without-worker")

    def operation(session):
        phase = challenges.update_phase(session, slug, **changes)
        if counts is not None:
            counting.set_default(session, slug, counts)
        return (phase.opens_at, phase.closes_at, phase.submissions_per_day, phase.submissions_total, phase.failures_count,
                phase.counts, phase.queue_without_worker)

    opened, closed, day, all_, failures, rule, waits = _run(operation)
    click.echo(f"phase {slug}: {opened.isoformat() if opened else 'open'} to {closed.isoformat() if closed else 'no end'}, "
               f"{day} a day, {all_ if all_ is not None else 'no'} total, failures {'count' if failures else 'free'}, "
               f"a team's {rule} counts, "
               f"uploads no worker can evaluate {'wait' if waits else 'refused'}")


@admin_group.command("create-user")
@click.argument("email")
@click.option("--role", type=click.Choice(["organizer", "participant"]), required=True)
def create_user_cmd(email, role):
    """Create a user; the password is read from stdin (prompted on a terminal), never from argv."""
    import sys

    from iugc.submissions import accounts

    if sys.stdin.isatty():
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise click.ClickException("give a password of at least 8 characters on stdin (e.g. `echo PASSWORD | iugc admin create-user ...`)")
    user_id = _run(lambda session: accounts.create_user(session, email, role, password).id)
    click.echo(f"created {role} {email.lower()} (user {user_id}); make an API token with `iugc admin token {email.lower()}`")


@admin_group.command("token")
@click.argument("email")
def token_cmd(email):
    """Print a new API token for a user (shown once; only its hash is kept) as the last word."""
    from iugc.submissions import accounts

    token = _run(lambda session: accounts.issue_token(session, email))
    click.echo(f"API token for {email.lower()} (shown once): {token}")


@admin_group.command("reevaluate")
@click.option("--phase", "slug", required=True)
@click.option("--submission", "submission_id", type=ROW_ID, default=None, help="Only this submission (default: every one of the phase).")
def reevaluate_cmd(slug, submission_id):
    """Queue new evaluations (a new evaluator, a corrected truth); the old ones are kept."""
    from iugc.submissions import queue
    from iugc.submissions.exceptions import ServiceError

    _, _, sessions = _service()
    try:
        created = queue.reevaluate(sessions, None, slug, submission_id)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"queued {len(created)} re-evaluation(s) in {slug}" + ("" if created else " (none finished yet, or no submissions)"))


@admin_group.command("publish")
@click.option("--phase", "slug", required=True)
def publish_cmd(slug):
    """Show a phase's results to participants (final-test results are hidden until then)."""
    from iugc.submissions import challenges

    _run(lambda session: challenges.publish(session, slug))
    click.echo(f"results of {slug} are published")


@admin_group.command("unpublish")
@click.option("--phase", "slug", required=True)
def unpublish_cmd(slug):
    """Hide a phase's results again (final-test results go back to organizers only); publish brings them back."""
    from iugc.submissions import challenges

    _run(lambda session: challenges.unpublish(session, slug))
    click.echo(f"results of {slug} are hidden again")


@admin_group.command("client-wheel")
@click.option("--wheel", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="A wheel of iugc-platform to hand out (default: build one from the checkout this platform runs from).")
def client_wheel_cmd(wheel):
    """Put the client teams install on the site: a wheel of this platform in
    <instance>/downloads, served at /downloads/<wheel>, which the how-to-submit page names
    in its `pip install` command (it gives `iugc kit` and `iugc submit`). Building one takes
    about a minute."""
    from iugc.submissions import downloads
    from iugc.submissions.config import Settings
    from iugc.submissions.exceptions import ServiceError

    instance = Settings.from_env().instance
    try:
        path = downloads.publish_client(instance, wheel)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"the site now serves {path.name} ({path.stat().st_size / 2**20:.1f} MB) at /downloads/{path.name}")


@click.command("worker")
@click.option("--concurrency", type=count(256), default=1, show_default=True, help="Evaluations run at the same time on this machine.")
@click.option("--grace", type=Number(min=0), default=30.0, show_default=True, help="Seconds SIGTERM waits for running evaluations before stopping their containers and requeueing them.")
@click.option("--evaluation", type=click.Choice(["docker", "noop"]), default="docker", hidden=True,
              help="noop: run no image (queue benchmarks and tests).")
def worker_cmd(concurrency, grace, evaluation):
    """Run evaluations from the queue on this machine's Docker engine until SIGTERM.

    With IUGC_BROKER_URL set, a Celery worker; otherwise threads fed from the database.
    Refuses to start on an unmigrated database. At start, requeues what this host's
    previous worker left running and removes its containers.
    """
    import time

    from iugc.submissions.storage import open_storage
    from iugc.submissions.worker import WorkerPool

    settings, _, sessions = _service()
    storage = open_storage(settings.storage_url, settings.instance, settings.s3_endpoint_url)
    if settings.broker_url:
        from iugc.submissions.celery_queue import run_celery_worker

        run_celery_worker(settings, sessions, storage, concurrency, evaluation, grace)
        return
    pool = WorkerPool.evaluating(evaluation, sessions, storage, threads=concurrency).start()
    click.echo(f"worker {pool.worker_id}: {concurrency} thread(s) on {settings.database_url.split('://')[0]}; SIGTERM stops it", err=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopping: waiting for running evaluations", err=True)
    finally:
        pool.stop(grace)
