"""Stopping a real containerised evaluation early, embedded (`iugc serve`) and on a Celery
`iugc worker` (a real redis-server):

- a team cancels it through the API while it runs: the worker sees the row cancelled and
  its container is gone within seconds; nothing is scored or stored;
- SIGTERM of the process running it: the process stops and removes the container and
  exits within its grace; the evaluation is back in the queue with the attempt not
  counted, and a restart completes it once.

Real frames, the baseline image slowed down at start (it sleeps before predicting).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from iugc.submissions import accounts, challenges, db
from iugc.submissions.models import CaseResult, Evaluation, LeaderboardEntry, State, StatusChange, Submission
from iugc.submissions.uploads import submit
from tests.conftest import ROOT
from tests.service_support import Service, challenge_file, docker_like_archive, evaluation_pid, free_port, redis_server, wait_for_port  # noqa: F401
from tests.submissions.test_service_crash import slow_image  # noqa: F401 (fixture)
from tests.submissions.test_service_e2e import baseline_image, dataset  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.xdist_group("docker"), pytest.mark.slow]

CANCEL_BOUND_SECONDS = 8  # the worker looks every second; killing and removing a container takes 1-3 s
EXIT_BOUND_SECONDS = 30   # --grace 1, then the container is stopped and removed


class Run:
    """A service database with one queued submission of the slow image, and the
    processes that serve and evaluate it (``iugc serve``; Celery: + ``iugc worker``)."""

    def __init__(self, mode, slow_image, dataset, tmp_path, request):
        self.engine, self.image_id = slow_image
        self.mode, self.tmp = mode, tmp_path
        url = f"sqlite:///{tmp_path / 'iugc.sqlite3'}"
        self.svc = Service(url, tmp_path, challenge_file(tmp_path, limits={"time_limit_seconds": 120, "memory_mb": 2048}))
        user = self.svc.participant("a@example.org", "alpha")
        with db.transaction(self.svc.sessions) as session:
            challenges.add_dataset(session, self.svc.phases[0], dataset)
            self.token = accounts.issue_token(session, "a@example.org")
        with open(docker_like_archive(tmp_path / "a.tar", "x"), "rb") as stream:
            self.sid = submit(self.svc.sessions, self.svc.storage, user, self.svc.phases[0], stream)
        with db.transaction(self.svc.sessions) as session:  # the image is on the engine already: not loaded again
            session.get(Submission, self.sid).image_digest = self.image_id
        self.env = {**os.environ, "IUGC_INSTANCE": str(tmp_path), "IUGC_DATABASE_URL": url, "IUGC_STORAGE_URL": str(self.svc.storage.root),
                    "IUGC_CACHE_DIR": str(tmp_path / "cache"), "IUGC_SECRET_KEY": "k" * 40}
        self.env.pop("IUGC_BROKER_URL", None)
        if mode == "celery":
            self.env["IUGC_BROKER_URL"] = request.getfixturevalue("redis_server").url
        self.port = free_port()
        self.processes: list[subprocess.Popen] = []
        self.owners: dict[int, int] = {}

    def start(self) -> subprocess.Popen:
        """Start serving; returns the process that runs the evaluations."""
        serve = ["serve", "--port", str(self.port), "--grace", "1"] + (["--workers", "0"] if self.mode == "celery" else [])
        server = self._spawn(serve)
        wait_for_port(self.port, process=server)
        return self._spawn(["worker", "--concurrency", "1", "--grace", "1"]) if self.mode == "celery" else server

    def _spawn(self, args) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "iugc", *args], env=self.env, cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def containers(self, process) -> list:
        # sparse: the list answer alone; inspecting each one raced with the removal watched for (NotFound)
        if process.pid not in self.owners:
            self.owners[process.pid] = evaluation_pid(process, self.mode == "embedded")
        owner = self.owners[process.pid]
        return self.engine.containers.list(all=True, sparse=True, filters={"label": f"org.iugc.owner={socket.gethostname()}:{owner}"})

    def wait_running_container(self, process, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not [c for c in self.containers(process) if c.status == "running"]:
            assert time.monotonic() < deadline, "the evaluation's container never started"
            assert process.poll() is None, f"the worker exited with {process.returncode}"
            time.sleep(0.2)

    def wait_status(self, states, timeout: float) -> State:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.svc.sessions() as session:
                status = session.get(Submission, self.sid).status
            if status in states:
                return status
            time.sleep(0.5)
        return status

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.svc.engine.dispose()


@pytest.fixture
def run(request, slow_image, dataset, tmp_path):
    mode = request.param
    run = Run(mode, slow_image, dataset, tmp_path, request)
    yield run
    run.close()


@pytest.mark.parametrize("run", ["embedded", "celery"], indirect=True)
def test_cancelling_a_running_evaluation_removes_its_container_within_seconds(run):
    import requests

    worker = run.start()
    run.wait_running_container(worker)
    cancelled = requests.post(f"http://127.0.0.1:{run.port}/api/v1/submissions/{run.sid}/cancel",
                              headers={"Authorization": f"Bearer {run.token}"}, timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    began = time.monotonic()
    while run.containers(worker) and time.monotonic() - began < 60:
        time.sleep(0.2)
    gone_after = time.monotonic() - began
    assert run.containers(worker) == [] and gone_after < CANCEL_BOUND_SECONDS, f"container still there after {gone_after:.1f} s"
    time.sleep(2)  # what a late result would have written
    assert worker.poll() is None  # the worker goes on
    with run.svc.sessions() as session:
        (evaluation,) = session.query(Evaluation).all()
        submission = session.get(Submission, run.sid)
        assert evaluation.status == submission.status == State.cancelled
        assert evaluation.result_key is None and evaluation.score is None and evaluation.aggregates is None
        assert submission.score is None and submission.result_evaluation_id is None
        assert session.query(CaseResult).count() == 0 and session.query(LeaderboardEntry).count() == 0
        assert [c.to_state for c in session.query(StatusChange).order_by(StatusChange.id)][-2:] == [State.running, State.cancelled]


@pytest.mark.parametrize("run", ["embedded", "celery"], indirect=True)
def test_sigterm_stops_the_running_container_requeues_it_uncounted_and_a_restart_completes_it(run):
    worker = run.start()
    run.wait_running_container(worker)
    began = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.wait(EXIT_BOUND_SECONDS + 30)
    exited_after = time.monotonic() - began
    assert exited_after < EXIT_BOUND_SECONDS, f"exited after {exited_after:.1f} s"
    assert run.containers(worker) == []  # removed by the shutdown itself, not by the next start
    with run.svc.sessions() as session:
        (evaluation,) = session.query(Evaluation).all()
        assert evaluation.status == State.queued and evaluation.attempts == 0 and evaluation.worker_id is None
        assert session.get(Submission, run.sid).counts_against_quota  # still a submission of the team's, not a failure
    restarted = run.start() if run.mode == "embedded" else run._spawn(["worker", "--concurrency", "1", "--grace", "1"])
    assert run.wait_status((State.succeeded, State.failed), 240) == State.succeeded
    with run.svc.sessions() as session:
        (evaluation,) = session.query(Evaluation).all()
        history = [c.to_state for c in session.query(StatusChange).order_by(StatusChange.id)]
        assert evaluation.attempts == 1
        assert history == [State.received, State.validating, State.queued, State.running, State.queued, State.running, State.succeeded]
        assert session.query(CaseResult).count() == evaluation.aggregates["n_cases"] > 0
    assert run.containers(restarted) == []
