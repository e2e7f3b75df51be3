"""Workers: threads that claim queued evaluations, run them and store their results.

:class:`WorkerPool` is the embedded mode (``iugc serve`` with no broker, ``iugc worker``):
N threads fed from the database, one heartbeat thread that also runs the reaper. At
start it requeues what its own previous process left running on this host (the owner
process is gone, so there is no need to wait for the heartbeat timeout) and removes that
run's containers and folders (``iugc.sandbox.container_runner.cleanup_stale``).

:func:`run_job` is the real evaluation: the archive from storage, loaded once per engine,
then ``iugc.sandbox.evaluate_image.evaluate_image`` as it is; there is no other way to run
an image.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from sqlalchemy.orm import Session, sessionmaker

from iugc.challenge.outputs import LANDMARKS_FILE
from iugc.sandbox.docker_engine import Host
from iugc.sandbox.exceptions import CancelledError, RetryableError, SubmissionError
from iugc.submissions import capacity, queue
from iugc.submissions.queue import Job

log = logging.getLogger("iugc.worker")

CANCEL_POLL_SECONDS = 1.0
"""How often a worker looks whether the rows it holds were cancelled (a read of those rows)."""
STOP_SECONDS = 10.0
"""How long a stop waits for cancelled evaluations to remove their containers."""

Evaluate = Callable[[Job], dict]
"""Runs one job and returns ``evaluate_image``'s result; raises RetryableError for a platform fault."""


def evaluator_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("iugc-platform")
    except PackageNotFoundError:
        return "unknown"


def run_job(job: Job, storage) -> dict:
    """The real evaluation of a job on this machine's Docker engine."""
    from iugc.challenge.definition import ChallengeDefinition
    from iugc.sandbox import docker_engine
    from iugc.sandbox.docker_engine import Limits
    from iugc.evaluator.evaluate import default_cache_dir
    from iugc.sandbox.evaluate_image import evaluate_image
    from iugc.sandbox.intake import load_archive

    if job.dataset_path is None:
        raise RetryableError("no dataset is registered for this phase (`iugc admin add-dataset`)")
    dataset = Path(job.dataset_path)
    try:
        manifest = (dataset / "manifest.json").read_bytes()
    except OSError as exc:
        raise RetryableError(f"the phase's dataset cannot be read ({exc.strerror})") from None
    if hashlib.sha256(manifest).hexdigest() != job.manifest_sha256:
        raise RetryableError("the phase's dataset changed since it was registered; register it again")
    challenge = ChallengeDefinition.model_validate(job.challenge)
    limits = Limits(**job.limits)
    engine = docker_engine.client()
    image = job.image_digest
    if image is None or image not in docker_engine.image_ids(engine):  # load each image once per engine
        try:
            with storage.local_copy(job.archive_sha256) as archive:
                image, _ = load_archive(engine, archive, limits)
        except SubmissionError as exc:
            return {"status": "failed", "failure": exc.reason, "error": str(exc), "image_digest": None, "logs": ""}
    return keep_masks(storage, challenge.phase(job.phase_name).public_cases, lambda keep: evaluate_image(
        image, dataset, challenge, limits, engine=engine, cache_dir=default_cache_dir(), keep_outputs=keep, cancel=job.cancel))


def keep_masks(storage, public_cases: bool, evaluate: Callable[[Path | None], dict]) -> dict:
    """``evaluate(keep_outputs)``: ``evaluate_image`` given a folder for the validated masks
    when the phase's cases are public; those are stored and named in the result
    (``output_masks``: case id -> storage key; a landmark challenge's ``landmarks.json``:
    ``output_landmarks``, its storage key) for the site's overlays. A run of a phase
    with hidden cases gets no folder and keeps nothing."""
    if not public_cases:
        return evaluate(None)
    with tempfile.TemporaryDirectory(prefix="iugc-kept-") as kept:
        result = evaluate(Path(kept))
        if result.get("status") == "succeeded":
            result["output_masks"] = {p.stem: storage.put_bytes(p.read_bytes()) for p in sorted(Path(kept).glob("*.png"))}
            landmarks = Path(kept) / LANDMARKS_FILE
            if landmarks.is_file():
                result["output_landmarks"] = storage.put_bytes(landmarks.read_bytes())
    return result


def noop_job(job: Job) -> dict:
    """A no-op evaluation (``--evaluation noop``): measures and tests the queue's own
    dispatch and bookkeeping; it runs no image. ``IUGC_NOOP_SECONDS`` makes it take time."""
    import os

    seconds = float(os.environ.get("IUGC_NOOP_SECONDS") or 0)
    if seconds > 0 and job.cancel.wait(seconds):
        raise CancelledError("the evaluation was cancelled")
    return {"status": "succeeded", "failure": None, "error": None, "image_digest": None, "logs": "",
            "cases": {}, "aggregates": {"n_cases": 0}, "score": None}


EVALUATIONS = {"docker": run_job, "noop": lambda job, storage: noop_job(job)}
"""``--evaluation`` choices: the real one, and the no-op for benchmarks and queue tests."""
CAPACITIES = {"docker": capacity.this_host, "noop": lambda: capacity.ANYTHING}
"""What a worker of each ``--evaluation`` can give one evaluation (the no-op runs nothing)."""


class WorkerPool:
    """``threads`` worker threads and a heartbeat/reaper thread in this process."""

    def __init__(self, sessions: sessionmaker[Session], storage, *, threads: int = 1, evaluate: Evaluate | None = None,
                 heartbeat_seconds: float = queue.HEARTBEAT_SECONDS, timeout_seconds: float = queue.HEARTBEAT_TIMEOUT_SECONDS,
                 max_attempts: int = queue.MAX_ATTEMPTS, poll_seconds: float = 0.5, cleanup: bool = True,
                 cancel_poll_seconds: float = CANCEL_POLL_SECONDS, stop_seconds: float = STOP_SECONDS,
                 slots: int | None = None, idle_claim_seconds: float | None = None, host: Host | None = None):
        """``slots``: with ``threads=0`` (Celery runs ``run_one``), how many evaluations this
        process runs at once at most. ``idle_claim_seconds``: while it runs none, claim from
        the database that often (:meth:`_claim_when_idle`). ``host``: what this worker gives
        one evaluation (``capacity``); it claims only what that can run (None: anything)."""
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: only heartbeats, jobs run by run_one), got {threads}")
        if idle_claim_seconds is not None and not slots:
            raise ValueError("idle_claim_seconds needs slots (the evaluations run at once)")
        self.sessions, self.storage, self.n_threads = sessions, storage, threads
        self.evaluate = evaluate or (lambda job: run_job(job, storage))
        self.heartbeat_seconds, self.timeout_seconds = heartbeat_seconds, timeout_seconds
        self.max_attempts, self.poll_seconds, self.cleanup = max_attempts, poll_seconds, cleanup
        self.cancel_poll_seconds, self.stop_seconds = min(cancel_poll_seconds, heartbeat_seconds), stop_seconds
        self.worker_id = queue.new_worker_id()
        self.version = evaluator_version()
        self._stop = threading.Event()
        self._wakeup = threading.Event()
        self._held: dict[int, Job] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.completed = 0
        self.requeued_at_start: dict = {}
        self._slots = threading.BoundedSemaphore(slots) if slots else None
        self.idle_claim_seconds = idle_claim_seconds
        self.host = host

    @classmethod
    def evaluating(cls, evaluation: str, sessions: sessionmaker[Session], storage, **options) -> "WorkerPool":
        """A pool running ``--evaluation`` ``evaluation`` (``EVALUATIONS``), claiming what
        its machine can give (``CAPACITIES``)."""
        return cls(sessions, storage, evaluate=lambda job: EVALUATIONS[evaluation](job, storage),
                   host=CAPACITIES[evaluation](), **options)

    def start(self) -> "WorkerPool":
        # our previous process's evaluations, at once (its pid is gone: no heartbeat timeout to wait)
        self.requeued_at_start = queue.reap(self.sessions, self.timeout_seconds, self.max_attempts)
        capacity.register(self.sessions, self.worker_id, self.host or capacity.ANYTHING)
        if self.cleanup:
            self._cleanup_engine()
        self._threads = [threading.Thread(target=self._work, name=f"iugc-worker-{i}", daemon=True) for i in range(self.n_threads)]
        self._threads.append(threading.Thread(target=self._beat, name="iugc-heartbeat", daemon=True))
        if self.idle_claim_seconds is not None:
            self._threads.append(threading.Thread(target=self._claim_when_idle, name="iugc-idle-claim", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def _cleanup_engine(self) -> None:
        from iugc.sandbox import docker_engine
        from iugc.sandbox.container_runner import cleanup_stale

        try:
            removed = cleanup_stale(docker_engine.client())
        except RetryableError as exc:
            log.warning("no engine to clean up (%s)", exc)
            return
        if removed:
            log.info("removed %d leftovers of a previous run", removed)

    def wake(self) -> None:
        """A submission was queued: look now instead of at the next poll."""
        self._wakeup.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; give running evaluations ``timeout`` seconds to finish, then stop
        their containers and requeue them (a shutdown never counts against a team or its
        attempts); returns once they are given back, at most ``timeout + 2 * stop_seconds`` later."""
        self._stop.set()
        self._wakeup.set()
        self.interrupt(timeout)
        deadline = time.monotonic() + self.stop_seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            held = list(self._held.values())
        for job in held:  # a thread that did not give its job back in time
            queue.release(self.sessions, job, "worker_lost", "worker stopped", interrupted=True)
        try:
            capacity.leave(self.sessions, self.worker_id)
        except Exception:  # the database is gone: the row stops being live by itself
            log.warning("could not remove this worker from the list of workers; it drops out after the heartbeat timeout")

    def interrupt(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the held evaluations to end, then cancel the rest
        (their runners kill and remove the containers; ``run`` requeues them) and wait up
        to ``stop_seconds`` for that."""
        self._wait_idle(grace)
        with self._lock:
            for job in self._held.values():
                job.cancel.set()
        self._wait_idle(self.stop_seconds)

    def _wait_idle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self._held and time.monotonic() < deadline:
            time.sleep(0.05)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the threads to end (after ``stop``): a job still in hand finishes first."""
        for thread in self._threads:
            thread.join(timeout)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = queue.claim_next(self.sessions, self.worker_id, self.host)
            except Exception:
                log.exception("claiming failed; retrying")  # the database restarting, say
                self._stop.wait(self.poll_seconds * 4)
                continue
            if job is None:
                self._wakeup.wait(self.poll_seconds)
                self._wakeup.clear()
                continue
            self.run(job)

    def run_one(self, evaluation_id: int) -> bool:
        """Claim and run one named evaluation (a Celery task), or, when it is not claimable
        (its team has one running, it was taken), the next queued one; False when none is."""
        with self._slots or contextlib.nullcontext():
            job = (queue.claim(self.sessions, self.worker_id, evaluation_id, self.host)
                   or queue.claim_next(self.sessions, self.worker_id, self.host))
            if job is None:
                return False
            self.run(job)
            return True

    def _claim_when_idle(self) -> None:
        """While this process runs nothing, claim queued evaluations from the database (the
        row is the truth; a broker message is only a wake-up), one at a time, in a slot of
        its own. A Celery consumer that silently stopped taking messages (Celery's threads
        pool after some Redis reconnections) then still leaves no queued row behind."""
        while not self._stop.wait(self.idle_claim_seconds):
            while not self._stop.is_set() and not self._held and self._slots.acquire(blocking=False):
                try:
                    job = queue.claim_next(self.sessions, self.worker_id, self.host)
                    if job is None:
                        break
                    log.warning("evaluation %d: claimed from the database, no broker message came for it", job.evaluation_id)
                    self.run(job)
                except Exception:
                    log.exception("claiming from the database failed; retrying")  # the database restarting, say
                    break
                finally:
                    self._slots.release()

    def run(self, job: Job) -> None:
        """Run a claimed job, heartbeating it meanwhile, and store its result once."""
        with self._lock:
            self._held[job.evaluation_id] = job
        try:
            self._run(job)
        finally:
            with self._lock:
                self._held.pop(job.evaluation_id, None)

    def _run(self, job: Job) -> None:
        try:
            result = self.evaluate(job)
        except RetryableError as exc:
            self._until_stored(queue.release, job, "platform_error", f"platform error: {exc}", self.max_attempts)
            return
        except CancelledError:  # stopped on purpose: the row is no longer ours, or we shut down
            if self._until_stored(queue.release, job, "worker_lost", "worker stopped", self.max_attempts, interrupted=True):
                log.info("evaluation %d: stopped by the worker's shutdown and requeued", job.evaluation_id)
            else:
                log.info("evaluation %d: no longer ours (cancelled or reaped); its container was stopped", job.evaluation_id)
            return
        except KeyboardInterrupt:
            self._until_stored(queue.release, job, "worker_lost", "worker interrupted", self.max_attempts, interrupted=True)
            raise
        except Exception as exc:  # a bug or a broken engine: the team is not at fault
            log.exception("evaluation %d crashed", job.evaluation_id)
            self._until_stored(queue.release, job, "platform_error", f"{type(exc).__name__}: {exc}", self.max_attempts)
            return
        if self._until_stored(queue.finish, job, result, self.storage, self.version):
            self.completed += 1
        else:
            log.info("evaluation %d was no longer ours (cancelled or reaped); result not stored", job.evaluation_id)

    def _until_stored(self, write, job: Job, *args, **kwargs):
        """Write a job's outcome, retrying while the database is unreachable (a restart):
        a computed result is not dropped for that. After ``timeout_seconds`` of failures
        it gives up; the reaper then requeues the row (its heartbeat has stopped)."""
        from sqlalchemy.exc import DBAPIError

        deadline, pause = time.monotonic() + self.timeout_seconds, 0.2
        while True:
            try:
                return write(self.sessions, job, *args, **kwargs)
            except DBAPIError as exc:
                if time.monotonic() > deadline:
                    log.error("evaluation %d: the database stayed unreachable; leaving it to the reaper", job.evaluation_id)
                    return False
                log.warning("evaluation %d: storing its outcome failed (%s); retrying", job.evaluation_id, exc.orig)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _beat(self) -> None:
        """Every ``cancel_poll_seconds``: cancel the jobs whose rows are no longer ours
        (cancelled, reaped); every ``heartbeat_seconds``: heartbeat and reap."""
        next_beat = time.monotonic() + self.heartbeat_seconds
        while not self._stop.wait(self.cancel_poll_seconds):
            try:
                with self._lock:
                    jobs = dict(self._held)
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat_seconds
                    held = queue.heartbeat(self.sessions, self.worker_id, list(jobs))
                    capacity.seen(self.sessions, self.worker_id, self.host or capacity.ANYTHING)
                    queue.reap(self.sessions, self.timeout_seconds, self.max_attempts)
                else:
                    held = queue.still_held(self.sessions, self.worker_id, list(jobs))
                for evaluation_id in jobs.keys() - held:
                    jobs[evaluation_id].cancel.set()
            except Exception:
                log.exception("heartbeat failed; retrying")
