"""``iugc serve`` (the API, with embedded workers or Celery) and ``iugc submit``."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (put a TLS proxy in front for anything else).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--threads", type=int, default=8, show_default=True, help="HTTP request threads (per process).")
@click.option("--processes", type=int, default=1, show_default=True,
              help="Processes answering requests on the port, each on its own socket (SO_REUSEPORT: the kernel spreads the "
                   "connections). Python runs one thread at a time per process: use the cores. The first also runs the embedded "
                   "workers; kept leaderboards, and rate limits without a Redis broker, are per process.")
@click.option("--workers", type=int, default=1, show_default=True, help="Embedded evaluation threads (no broker); 0: none, use `iugc worker`.")
@click.option("--grace", type=float, default=30.0, show_default=True, help="Seconds SIGTERM waits for requests and evaluations before stopping their containers and requeueing them.")
@click.option("--evaluation", type=click.Choice(["docker", "noop"]), default="docker", hidden=True,
              help="noop: run no image (queue benchmarks and tests).")
def serve_cmd(host, port, threads, workers, grace, evaluation, processes):
    """Serve API v1 (waitress) with embedded evaluation workers, until SIGTERM.

    With IUGC_BROKER_URL set, submissions go to Celery workers (`iugc worker`) instead.
    Refuses to start on an unmigrated database (run `iugc db upgrade`). SIGTERM stops
    accepting requests, lets running ones finish, then stops the containers of unfinished
    evaluations and requeues them (a shutdown never counts against a team).
    """
    from leaderboard.app import create_app
    from submissions.exceptions import ServiceError
    from submissions.worker import EVALUATIONS, WorkerPool

    if processes < 1:
        raise click.BadParameter("must be at least 1", param_hint="--processes")
    try:
        app = create_app()
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    ctx = app.extensions["iugc"]
    sockets, children = None, []
    if processes > 1:
        import socket

        try:  # a socket per process on one port (SO_REUSEPORT): the kernel spreads the connections evenly
            listeners = [socket.create_server((host, port), backlog=1024, reuse_port=True)]
            listeners += [socket.create_server((host, listeners[0].getsockname()[1]), backlog=1024, reuse_port=True)
                          for _ in range(processes - 1)]
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        sockets = listeners[:1]
        ctx.engine.dispose()  # no database connection crosses the fork
        children = [_fork_server(listener, listeners, threads, grace) for listener in listeners[1:]]
        for listener in listeners[1:]:
            listener.close()  # the child's own
    pool = dispatch = None
    try:
        if ctx.settings.broker_url:
            from submissions.celery_queue import dispatcher

            dispatch = dispatcher(ctx.settings, ctx.sessions)
            ctx.wake = dispatch.wake
        elif workers > 0:
            storage = ctx.storage
            pool = WorkerPool(ctx.sessions, storage, threads=workers, evaluate=lambda job: EVALUATIONS[evaluation](job, storage)).start()
            ctx.wake = pool.wake
        server = _server(app, host, port, threads, sockets)
    except BaseException:
        _stop_children(children, grace)
        raise
    mode = "celery" if ctx.settings.broker_url else f"{workers} embedded worker(s)"
    click.echo(f"serving http://{host}:{server.effective_port}/api/v1 ({mode}"
               f"{f', {processes} processes' if processes > 1 else ''}); SIGTERM stops", err=True)
    try:
        server.run()  # returns on SIGTERM/SIGINT (waitress ends its loop on KeyboardInterrupt)
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("stopping: finishing requests and evaluations", err=True)
        server.task_dispatcher.shutdown(cancel_pending=False, timeout=grace)
        server.close()
        if pool is not None:
            pool.stop(grace)
        if dispatch is not None:
            dispatch.stop()
        _stop_children(children, grace)


class OncePer:
    """A logging filter that lets one record through per ``seconds``: waitress warns "Task
    queue depth is N" for every request a busy server queues (hundreds a second at load).

    >>> note = OncePer(10, clock=iter([0.0, 3.0, 12.0]).__next__)  # three records, at 0, 3 and 12 s
    >>> [note.filter(None) for _ in range(3)]
    [True, False, True]
    """

    def __init__(self, seconds: float, clock=None):
        import time

        self.seconds, self._clock, self._next = seconds, clock or time.monotonic, float("-inf")

    def filter(self, record) -> bool:
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self.seconds
        return True


def _server(app, host, port, threads, sockets):
    import logging

    from waitress import create_server

    queue_log = logging.getLogger("waitress.queue")
    if not any(isinstance(f, OncePer) for f in queue_log.filters):
        queue_log.addFilter(OncePer(10.0))
    where = {"sockets": sockets} if sockets else {"host": host, "port": port}
    return create_server(app, threads=threads, clear_untrusted_proxy_headers=True,
                         max_request_body_size=_largest_upload(app.extensions["iugc"]), **where)


def _fork_server(listener, listeners: list, threads: int, grace: float) -> int:
    """A process answering requests on ``listener`` (one of ``listeners``, the others
    closed in it) with its own app (and database connections) until SIGTERM; returns its
    pid to the parent."""
    import os

    pid = os.fork()
    if pid:
        return pid
    status = 0
    try:
        for other in listeners:
            if other is not listener:
                other.close()
        from common.signals import interrupt_on_signals
        from leaderboard.app import create_app

        interrupt_on_signals()  # this process's own: SIGTERM ends it gracefully, as the first

        server = _server(create_app(), None, None, threads, [listener])
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        server.task_dispatcher.shutdown(cancel_pending=False, timeout=grace)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # a child must never return into the parent's code
        print(f"iugc serve: a request process failed: {exc}", file=sys.stderr)
        status = 1
    finally:
        os._exit(status)


def _stop_children(children: list[int], grace: float) -> None:
    """SIGTERM the request processes, wait up to ``grace`` seconds, then SIGKILL the rest."""
    import os
    import signal
    import time

    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    waiting = set(children)
    while waiting:
        for pid in list(waiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                waiting.discard(pid)
        if waiting and time.monotonic() > deadline:
            for pid in waiting:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            return
        time.sleep(0.05)


def _largest_upload(ctx) -> int:
    """Bytes waitress accepts in one request: the largest phase image limit plus the form."""
    from submissions.models import Phase

    with ctx.sessions() as session:
        limits = [p.limits.get("image_size_limit_mb", 0) for p in session.query(Phase)]
    return int(max(limits, default=1024) * 2**20) + 2**20


@click.command("submit")
@click.option("--phase", required=True, help="Phase slug (GET /api/v1/phases lists them).")
@click.option("--image", required=True, help="Image reference (saved with `docker save`) or a `docker save` archive.")
@click.option("--server", default=None, help="Service URL (default $IUGC_SERVER or http://127.0.0.1:8000).")
@click.option("--token", default=None, help="API token (default $IUGC_TOKEN).")
@click.option("--no-wait", is_flag=True, help="Return once the upload is accepted.")
@click.option("--timeout", type=float, default=None, help="Stop following after this many seconds (exit 2).")
def submit_cmd(phase, image, server, token, no_wait, timeout):
    """Upload an image to a phase and follow it to a result.

    Exit 0 when evaluated (the score is printed), 1 when it failed or was cancelled (with
    the reason), 2 when the service refused it or could not be reached.
    """
    import os

    from leaderboard.client import Client, ClientError, default_server, save_image

    token = token or os.environ.get("IUGC_TOKEN")
    if not token:
        raise click.UsageError("no token: pass --token or set IUGC_TOKEN (an organizer makes one with `iugc admin token EMAIL`)")
    client = Client(server or default_server(), token)
    try:
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
