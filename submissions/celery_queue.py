"""Scale-out: Celery with a Redis broker (``IUGC_BROKER_URL=redis://...``).

A Celery message only says "evaluation N is queued"; the database row stays the truth.
The task claims that row (queued -> running, conditional), so a message delivered twice,
or to two workers, runs the evaluation once, and a message for a cancelled or finished
evaluation does nothing. Late acknowledgement with requeue on worker loss and a
visibility timeout longer than the longest phase time limit bring back a message whose
worker died; the reaper (heartbeats, in every worker) brings back the row.

The :class:`Dispatcher` in ``iugc serve`` sends a message for each queued evaluation it
has not sent recently, when woken by an upload and every few seconds, so messages lost
with a Redis restart (no persistence) or refused because the team had one running are
sent again; extra messages are harmless. A worker that runs nothing also claims from the
database every ``IDLE_CLAIM_SECONDS``: Celery's threads-pool consumer can stop taking
messages after a few quick Redis reconnections and never say so.
"""
from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select

from iugc.submissions import queue
from iugc.submissions.config import Settings

log = logging.getLogger("iugc.celery")
TASK = "iugc.evaluate"
IDLE_CLAIM_SECONDS = 10.0
"""How often a Celery worker that runs nothing looks for queued evaluations in the
database itself (``WorkerPool._claim_when_idle``): a message is only a wake-up."""


def visibility_timeout(sessions) -> int:
    """Seconds before Redis redelivers an unacknowledged message: twice the longest phase
    time limit plus an hour (never shorter than a running evaluation)."""
    from iugc.submissions.models import Phase

    with sessions() as session:
        limits = session.execute(select(Phase.limits)).scalars().all()
    longest = max((float(l.get("time_limit_seconds", 0)) for l in limits), default=3600.0)
    return int(2 * longest + 3600)


def make_celery(settings: Settings, sessions):
    from celery import Celery

    app = Celery("iugc", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="iugc",
        broker_transport_options={"visibility_timeout": visibility_timeout(sessions)},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
    )
    return app


class Dispatcher:
    """Sends one message per queued evaluation, again after ``resend_seconds`` if still queued."""

    def __init__(self, settings: Settings, sessions, *, sweep_seconds: float = 2.0, resend_seconds: float = 10.0):
        self.app = make_celery(settings, sessions)
        self.sessions, self.sweep_seconds, self.resend_seconds = sessions, sweep_seconds, resend_seconds
        self._sent: dict[int, float] = {}
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="iugc-dispatch", daemon=True)

    def start(self) -> "Dispatcher":
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        self._stop.set()
        self._wakeup.set()
        self._thread.join(10)

    def sweep(self) -> int:
        """Send the messages due now; returns how many were sent."""
        now = time.monotonic()
        ids = queue.queued_ids(self.sessions)
        due = [i for i in ids if now - self._sent.get(i, -1e9) > self.resend_seconds]
        for evaluation_id in due:
            self.app.send_task(TASK, args=[evaluation_id])
            self._sent[evaluation_id] = now
        keep = set(ids)
        self._sent = {i: t for i, t in self._sent.items() if i in keep}
        return len(due)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except Exception:
                log.exception("dispatch failed (broker or database restarting?); retrying")
            self._wakeup.wait(self.sweep_seconds)
            self._wakeup.clear()


def dispatcher(settings: Settings, sessions) -> Dispatcher:
    return Dispatcher(settings, sessions).start()


def run_celery_worker(settings: Settings, sessions, storage, concurrency: int, evaluation: str = "docker",
                      grace: float = 30.0) -> None:
    """A Celery worker (threads pool) of ``concurrency`` evaluations, with this process's
    heartbeat and reaper; blocks until Celery stops. SIGTERM (Celery's warm shutdown)
    gives running evaluations ``grace`` seconds, then stops their containers and requeues
    them, so the shutdown is bounded."""
    from celery.signals import worker_shutting_down

    from iugc.submissions.worker import WorkerPool

    app = make_celery(settings, sessions)
    pool = WorkerPool.evaluating(evaluation, sessions, storage, threads=0, slots=concurrency,
                                 idle_claim_seconds=IDLE_CLAIM_SECONDS).start()
    for evaluation_id, state in pool.requeued_at_start.items():  # our previous process's: their messages may be stuck
        if state.value == "queued":
            app.send_task(TASK, args=[evaluation_id])

    def interrupt(**_):  # Celery waits for running tasks: make them end within the grace
        threading.Thread(target=pool.interrupt, args=(grace,), name="iugc-interrupt", daemon=True).start()

    worker_shutting_down.connect(interrupt, weak=False)

    @app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def evaluate(task, evaluation_id: int) -> bool:
        return pool.run_one(int(evaluation_id))

    try:
        app.worker_main(["worker", "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "WARNING",
                         "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", "iugc",
                         "-n", f"iugc-{pool.worker_id}"])
    finally:
        worker_shutting_down.disconnect(interrupt)
        pool.stop(5)
