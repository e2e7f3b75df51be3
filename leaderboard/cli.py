"""``iugc serve`` (the site and API under gunicorn, ``iugc.leaderboard.server``) and ``iugc submit``."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from iugc.common.options import Number, count


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (put a TLS proxy in front for anything else).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port (the one taken is printed).")
@click.option("--threads", type=count(256), default=2, show_default=True, help="HTTP request threads per process (2 answered 50 clients faster than 4 or 8 on 2 cores: docs/web.md).")
@click.option("--processes", type=count(64), default=1, show_default=True,
              help="Processes answering requests (gunicorn workers); Python runs one thread at a time per process: use the "
                   "cores. Each process keeps its own database connections, kept leaderboards and, without a Redis broker, "
                   "rate-limit counters.")
@click.option("--workers", type=count(256, least=0), default=1, show_default=True, help="Embedded evaluation threads (no broker), in one process "
                                                                         "of their own; 0: none, use `iugc worker`.")
@click.option("--grace", type=Number(min=0), default=30.0, show_default=True, help="Seconds SIGTERM waits for requests and evaluations before stopping their containers and requeueing them.")
@click.option("--evaluation", type=click.Choice(["docker", "noop"]), default="docker", hidden=True,
              help="noop: run no image (queue benchmarks and tests).")
def serve_cmd(host, port, threads, workers, grace, evaluation, processes):
    """Serve the site and API v1 (gunicorn) with embedded evaluation workers, until SIGTERM.

    With IUGC_BROKER_URL set, submissions go to Celery workers (`iugc worker`) instead.
    Refuses to start on an unmigrated database (run `iugc db upgrade`) or without a secret
    key. SIGTERM (or Ctrl-C) stops accepting requests, lets running ones finish, then stops
    the containers of unfinished evaluations and requeues them (a shutdown never counts
    against a team).
    """
    from iugc.leaderboard.app import create_app
    from iugc.leaderboard.server import Server
    from iugc.submissions.exceptions import ServiceError

    try:
        app = create_app()  # checks the settings, the schema and the secret key before anything listens
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    ctx = app.extensions["iugc"]
    _check_listen(host, port)
    max_body = _largest_upload(ctx)
    ctx.engine.dispose()  # no database connection crosses a fork
    mode = "celery" if ctx.settings.broker_url else f"{workers} embedded worker(s)"

    def announce(bound_host, bound_port):
        click.echo(f"serving http://{bound_host}:{bound_port}/api/v1 ({mode}, {processes} process(es) of {threads} threads); "
                   "SIGTERM stops", err=True)

    Server(ctx.settings, host=host, port=port, processes=processes, threads=threads, grace=grace, workers=workers,
           evaluation=evaluation, max_body=max_body, announce=announce).run()
    click.echo("stopped: requests finished, evaluations stopped and requeued", err=True)


def _check_listen(host: str, port: int) -> None:
    """One line before anything starts when the address cannot be listened on (in use, not ours)."""
    import os
    import socket

    try:
        socket.create_server((host, port)).close()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}; choose another --port or stop what "
                                   "listens there") from None


def _largest_upload(ctx) -> int:
    """Bytes a request may carry: the largest phase image limit plus the form (413 above)."""
    from iugc.submissions.models import Phase

    with ctx.sessions() as session:
        limits = [p.limits.get("image_size_limit_mb", 0) for p in session.query(Phase)]
    return int(max(limits, default=1024) * 2**20) + 2**20


@click.command("submit")
@click.option("--phase", required=True, help="Phase slug (GET /api/v1/phases lists them).")
@click.option("--image", required=True, help="Image reference (saved with `docker save`) or a `docker save` archive.")
@click.option("--server", default=None, help="Service URL (default $IUGC_SERVER or http://127.0.0.1:8000).")
@click.option("--token", default=None, help="API token (default $IUGC_TOKEN).")
@click.option("--no-wait", is_flag=True, help="Return once the upload is accepted.")
@click.option("--timeout", type=Number(min=0, min_open=True), default=None, help="Stop following after this many seconds (exit 2).")
def submit_cmd(phase, image, server, token, no_wait, timeout):
    """Upload an image to a phase and follow it to a result.

    Exit 0 when evaluated (the score is printed), 1 when it failed or was cancelled (with
    the reason), 2 when the service refused it or could not be reached.
    """
    import os

    from iugc.leaderboard.client import Client, ClientError, default_server, save_image

    token = token or os.environ.get("IUGC_TOKEN")
    if not token:
        raise click.UsageError("no token: pass --token or set IUGC_TOKEN (an organizer makes one with `iugc admin token EMAIL`)")
    try:
        client = Client(server or default_server(), token)
        client.check_phase(phase)
        with tempfile.TemporaryDirectory(prefix="iugc-submit-") as tmp:
            archive = Path(image)
            if not archive.is_file():
                archive = save_image(image, Path(tmp) / "image.tar")
            accepted = client.upload(phase, archive)
        click.echo(f"submission {accepted['id']}: {accepted['status']}")
        if no_wait:
            return
        status = client.wait(accepted["id"], timeout=timeout)
    except ClientError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if status["status"] == "succeeded":
        score = status["score"]
        click.echo(f"submission {status['id']}: succeeded, score {score:.4f}" if score is not None else
                   f"submission {status['id']}: succeeded (results hidden until published)")
        for key, value in (status.get("aggregates") or {}).items():
            click.echo(f"  {key:<22}{value}")
        return
    click.echo(f"submission {status['id']}: {status['status']}" + (f" ({status['failure']}): {status['error']}" if status.get("error") else ""))
    sys.exit(1)
