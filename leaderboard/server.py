"""What ``iugc serve`` runs: the app under gunicorn, and the embedded evaluation workers in
one process of their own.

- gunicorn's master keeps ``processes`` worker processes of ``threads`` threads each (the
  ``gthread`` worker). Each worker process listens on the port with a socket of its own
  (gunicorn's ``reuse_port``), so the kernel spreads the connections evenly over the
  processes; on one shared socket the process that woke first took most of them, and the
  other sat half idle (docs/web.md). The master holds the port bound, not listening, so
  it stays ours while a worker restarts, and ``--port 0`` has a number before any worker
  starts. Each worker process builds its own app, so its database connections, kept
  leaderboards and (without a Redis broker) rate counters are its own.
- Beside them, one evaluation process runs the embedded evaluation workers
  (``iugc.submissions.worker.WorkerPool``) or, with a broker, the Celery dispatcher. A request
  that queues a submission wakes it with SIGUSR1; it also looks on its own every few seconds.
- SIGTERM or SIGINT to the master stops accepting, gives requests ``grace`` seconds to
  finish (gunicorn's graceful timeout), then stops the evaluation process, which gives
  running evaluations ``grace`` seconds before it stops their containers and requeues them
  uncounted. A Ctrl-C in a terminal reaches every process: the workers leave their
  stopping to the master. A master killed outright (``kill -9``) takes its worker and
  evaluation processes with it (Linux), as the one process it replaced did: a restart
  finds the port free and requeues the evaluations at once.
"""
from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from iugc.submissions.config import Settings

WAKE_PID = "IUGC_EVALUATION_PID"  # the evaluation process, for the request processes' wake-ups


class _Arbiter(Arbiter):
    """gunicorn's master, stopping as gracefully on SIGINT as on SIGTERM (gunicorn's own
    SIGINT stops at once, cutting requests)."""

    def handle_int(self):
        self.handle_term()


class Server(BaseApplication):
    """The app under gunicorn with the evaluation process beside it; :meth:`run` blocks until
    a SIGTERM or SIGINT has stopped everything."""

    def __init__(self, settings: Settings, *, host: str, port: int, processes: int, threads: int, grace: float,
                 workers: int, evaluation: str, max_body: int, announce=None):
        self.settings, self.workers, self.evaluation, self.grace = settings, workers, evaluation, grace
        self.max_body, self.announce = max_body, announce
        self._port = _reserve(host, port)
        self.options = {"bind": f"{host}:{self._port.getsockname()[1]}", "reuse_port": True,
                        "workers": processes, "threads": threads, "worker_class": "gthread",
                        "graceful_timeout": math.ceil(grace), "timeout": max(120, math.ceil(grace) + 30), "keepalive": 5,
                        "loglevel": "warning", "accesslog": None, "when_ready": self._when_ready,
                        "post_worker_init": _leave_stopping_to_the_master, "on_exit": self._on_exit}
        self._evaluations: subprocess.Popen | None = None
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        """The app of one worker process (gunicorn calls this after the fork)."""
        from iugc.leaderboard.app import create_app

        app = create_app()
        app.config["MAX_CONTENT_LENGTH"] = self.max_body
        if os.environ.get(WAKE_PID):
            app.extensions["iugc"].wake = _waker(int(os.environ[WAKE_PID]))
        return app

    def run(self):
        """Serve until stopped; returns, in this process, after a graceful stop (gunicorn's own
        exit status 0). The worker processes forked inside it leave by their SystemExit."""
        master = os.getpid()
        try:
            _Arbiter(self).run()
        except SystemExit as exc:
            if os.getpid() != master or exc.code not in (0, None):
                raise
        finally:
            if os.getpid() == master:
                self._port.close()

    def _when_ready(self, arbiter):
        if self.settings.broker_url or self.workers > 0:
            # a fresh interpreter (not a fork of this one), reading the same settings from the environment
            self._evaluations = subprocess.Popen([sys.executable, "-m", "iugc.leaderboard.server", str(self.workers), self.evaluation,
                                                  str(self.grace), str(os.getpid())])
            os.environ[WAKE_PID] = str(self._evaluations.pid)  # the workers forked next inherit it
        if self.announce:
            self.announce(*self._port.getsockname()[:2])

    def _on_exit(self, arbiter):
        process = self._evaluations
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.grace + 30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _reserve(host: str, port: int) -> socket.socket:
    """The port bound in the master with SO_REUSEPORT and not listening: it takes no
    connections (only the workers' listening sockets do), keeps off the port for as long as
    the server runs whatever binds without SO_REUSEPORT (a second `iugc serve` among them:
    its ``cli._check_listen`` binds so), and names the port when ``port`` is 0."""
    reserved = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind((host, port))
    except OSError:
        reserved.close()
        raise
    return reserved


def _leave_stopping_to_the_master(worker):
    """A terminal's Ctrl-C reaches every process; a request process ignores it and stops
    when the master tells it to (gracefully). If the master is killed outright, the request
    process ends with it, so the port is free for a restart at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(worker.ppid)


def _waker(pid: int):
    def wake() -> None:
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:  # stopping: the next evaluation process looks at start-up
            pass
    return wake


def _die_with(parent: int) -> None:
    """End this process when ``parent`` dies, however it dies (``kill -9`` of `iugc serve`
    ends its evaluations as it always did: a restart requeues them at once)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that
        os._exit(1)


def run_evaluations(settings: Settings, workers: int, evaluation: str, grace: float) -> None:
    """The evaluation process: embedded workers (or, with a broker, the Celery dispatcher)
    until SIGTERM or SIGINT; then running evaluations get ``grace`` seconds, and their
    containers are stopped and the evaluations requeued."""
    from iugc.common.signals import interrupt_on_signals
    from iugc.submissions import db
    from iugc.submissions.storage import open_storage
    from iugc.submissions.worker import WorkerPool

    interrupt_on_signals()
    engine = db.make_engine(settings.database_url)
    sessions = db.session_factory(engine)
    pool = dispatch = None
    try:
        if settings.broker_url:
            from iugc.submissions.celery_queue import dispatcher

            dispatch = dispatcher(settings, sessions)
            wake = dispatch.wake
        else:
            storage = open_storage(settings.storage_url, settings.instance, settings.s3_endpoint_url)
            pool = WorkerPool.evaluating(evaluation, sessions, storage, threads=workers).start()
            wake = pool.wake
        signal.signal(signal.SIGUSR1, lambda *_: wake())
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if pool is not None:
            pool.stop(grace)
        if dispatch is not None:
            dispatch.stop()
        engine.dispose()


if __name__ == "__main__":  # the evaluation process: WORKERS EVALUATION GRACE PARENT, the settings from the environment
    _die_with(int(sys.argv[4]))
    run_evaluations(Settings.from_env(), int(sys.argv[1]), sys.argv[2], float(sys.argv[3]))
